// defines: MLPConfig, add_mlp_fields, mlp_config_from, MLPImpl, MLP
// An MLP denoiser network for low-dimensional data (2-D mixtures and other toys): the flat
// input and a positional embedding of c_noise (plus a label embedding when conditional, and one
// of the target time through a zero-initialised layer for a trajectory model) feed residual
// SiLU layers. Used with preconditioning like any network.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "models/feature_taps.h"

namespace distillery {

class Config;
class ConfigSchema;

struct MLPConfig {
  std::vector<int64_t> shape = {2};  // sample shape; the network sees it flattened
  int64_t hidden = 128;              // width of the hidden layers
  int64_t layers = 3;                // residual hidden layers
  int64_t embedding = 32;            // noise-embedding channels (even)
  int64_t num_classes = 0;           // 0: unconditional
  double label_dropout = 0.1;        // probability with which teacher training drops a row's label (CFG)
  bool target_time = false;          // a second time input, the σ a trajectory model jumps to (CTM)
  int64_t dim() const;
};

// Declares the MLP's own keys under `prefix` ("model."); the shared ones come from add_network_fields.
void add_mlp_fields(ConfigSchema& schema, const std::string& prefix);
MLPConfig mlp_config_from(const Config& config, const std::string& prefix);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(MLPConfig config);
  // x_in: [N, *shape]; c_noise: [N]; labels: [N] (−1 = none) or undefined; c_noise_target: [N],
  // read only with target_time.
  at::Tensor forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target = {});
  // "layer.0": the input and its embeddings summed, "layer.<k>": after the k-th residual layer.
  const std::vector<FeatureTap>& feature_taps() const { return taps_; }
  // The same pass as forward(), handing each tap's features to `visit` and ending where it says.
  void features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                const FeatureVisitor& visit);
  const MLPConfig& config() const { return config_; }

 private:
  // The raw output, or an undefined tensor when `visit` (may be null) ends the pass early.
  at::Tensor run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                 const FeatureVisitor* visit);

  MLPConfig config_;
  std::vector<FeatureTap> taps_;
  torch::nn::Linear input_{nullptr}, noise_{nullptr}, target_noise_{nullptr}, label_{nullptr}, output_{nullptr};
  torch::nn::ModuleList hidden_{nullptr};
};
TORCH_MODULE(MLP);

}  // namespace distillery
