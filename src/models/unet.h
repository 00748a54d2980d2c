// defines: UNetConfig, norm_groups, add_unet_fields, unet_config_from, UNet, UNetImpl
// A UNet in the EDM / DDPM++ family (Song et al. 2021; Karras et al. 2022): residual blocks
// with GroupNorm + SiLU, a noise embedding (positional or Fourier) through a two-layer MLP
// that modulates every block (scale and shift), optionally a second noise embedding of the
// target time of a trajectory model (added inside that MLP through a zero-initialised layer, so
// a network given it starts as the one without), optional class conditioning by a label
// embedding with label dropout (for classifier-free guidance), self-attention at chosen
// resolutions, and skip connections from every encoder block to the decoder.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "models/feature_taps.h"

namespace distillery {

class Config;
class ConfigSchema;

struct UNetConfig {
  int64_t in_channels = 1;                     // image channels in
  int64_t out_channels = 1;                    // image channels out
  int64_t resolution = 28;                     // input height = width
  int64_t model_channels = 32;                 // channels at the first level
  std::vector<int64_t> channel_mult = {1, 2, 2};  // per level; each level after the first halves the resolution
  int64_t blocks_per_level = 2;                // residual blocks per encoder level (decoder: one more)
  std::vector<int64_t> attn_resolutions = {7}; // resolutions with self-attention
  int64_t channels_per_head = 32;              // attention heads = channels / this
  double dropout = 0.1;                        // inside residual blocks, training only
  int64_t num_classes = 0;                     // 0: unconditional
  double label_dropout = 0.1;                  // probability with which teacher training drops a row's label (CFG)
  std::string noise_embedding = "positional";  // positional | fourier
  bool target_time = false;                    // a second time input, the σ a trajectory model jumps to (CTM)
};

// GroupNorm groups for a layer of `channels` (EDM's choice: at most 32, at least 4 channels each).
int64_t norm_groups(int64_t channels);

// Declares the UNet's own keys under `prefix` ("model.") with the defaults above; the keys
// every network shares (num_classes, label_dropout) are declared by add_network_fields.
void add_unet_fields(ConfigSchema& schema, const std::string& prefix);
UNetConfig unet_config_from(const Config& config, const std::string& prefix);

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(UNetConfig config);
  // x_in: [N, C, H, W] (already scaled by c_in), c_noise: [N], labels: [N] int64 with −1 for
  // "no label", or undefined for unconditional models; c_noise_target: [N], read only with
  // target_time. Returns the raw output F.
  at::Tensor forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target = {});
  // The taps in network order: "enc.0" after the input convolution, "enc.<k>" after the k-th
  // encoder block, "bottleneck" after the two middle blocks (what the decoder starts from) and
  // "dec.<k>" after the k-th decoder block that follows them.
  const std::vector<FeatureTap>& feature_taps() const { return taps_; }
  // The same pass as forward(), handing each tap's features to `visit` and ending where it says.
  void features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                const FeatureVisitor& visit);
  const UNetConfig& config() const { return config_; }

 private:
  at::Tensor noise_features(const at::Tensor& c_noise) const;  // cos and sin of the positional or Fourier angles
  at::Tensor embed(const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target);
  // The raw output, or an undefined tensor when `visit` (may be null) ends the pass early.
  at::Tensor run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                 const FeatureVisitor* visit);

  UNetConfig config_;
  std::vector<FeatureTap> taps_;
  at::Tensor fourier_frequencies_;  // buffer, Fourier embedding only
  torch::nn::Linear map_label_{nullptr}, map_layer0_{nullptr}, map_target_{nullptr}, map_layer1_{nullptr};
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
  torch::nn::ModuleList enc_{nullptr}, dec_{nullptr};
  std::vector<bool> dec_takes_skip_;
};
TORCH_MODULE(UNet);

}  // namespace distillery
