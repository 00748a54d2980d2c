// defines: DitConfig, add_dit_fields, dit_config_from, dit_config_json, DitImpl, Dit
// DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"): the image (in DiT's
// checkpoints, a VAE latent) cut into p×p patches, embedded as tokens with fixed 2-D sin-cos
// positions, and transformed by blocks whose layer norms are scaled, shifted and whose
// residual branches are gated by the noise-plus-class embedding (adaLN-Zero: the modulation
// starts at zero, so each block starts as the identity). With learn_sigma it predicts 2C
// channels, ε and the interpolation of its DDPM variance; the ODE only reads ε, so the second
// half is kept for state-dict round trips and ignored at inference. Labels embed through a
// table with a row for the null class (−1 here) when label dropout is on. Module names are
// DiT's, so its state dicts load without renaming.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <string>

#include "models/feature_taps.h"

namespace distillery {

class Config;
class ConfigSchema;

// DiT-XL/2 at 256×256 (a 4×32×32 latent) by default.
struct DitConfig {
  int64_t in_channels = 4;
  int64_t resolution = 32;
  int64_t patch_size = 2;
  int64_t hidden_size = 1152;
  int64_t depth = 28;
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  int64_t num_classes = 1000;  // 0: unconditional, no label embedding
  double label_dropout = 0.1;  // above 0, the table has the null class's row (DiT's rule)
  bool learn_sigma = true;
};

// The keys only DiT reads (patch_size, hidden_size, depth, num_heads, mlp_ratio, learn_sigma).
void add_dit_fields(ConfigSchema& schema, const std::string& prefix);
// Reads those, in_channels, resolution and the label keys; in_channels and resolution left
// unset take DiT's defaults (a 4×32×32 latent), not the UNet's.
DitConfig dit_config_from(const Config& config, const std::string& prefix);
std::string dit_config_json(const DitConfig& config);

class DitImpl : public torch::nn::Module {
 public:
  explicit DitImpl(DitConfig config);
  // x_in [N, C, H, W], the timestep c_noise [N] (fractional allowed), labels [N] int64 (−1: the
  // null class) -> [N, 2C or C, H, W]: ε first, then the variance interpolation with learn_sigma.
  at::Tensor forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels);
  // Taps "blocks.<i>" after each transformer block, the tokens laid out as [hidden_size, H/p, W/p].
  const std::vector<FeatureTap>& feature_taps() const { return taps_; }
  void features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit);
  const DitConfig& config() const { return config_; }

 private:
  at::Tensor run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit);
  at::Tensor conditioning(const at::Tensor& c_noise, const at::Tensor& labels);
  void initialize();

  DitConfig config_;
  std::vector<FeatureTap> taps_;
  at::Tensor pos_embed_;
  std::shared_ptr<torch::nn::Module> x_embedder_, t_embedder_, y_embedder_, final_layer_;
  torch::nn::ModuleList blocks_{nullptr};
};
TORCH_MODULE(Dit);

}  // namespace distillery
