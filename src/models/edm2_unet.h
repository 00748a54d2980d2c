// defines: Edm2UNetConfig, add_edm2_unet_fields, edm2_unet_config_from, resolved, edm2_unet_config_json, Edm2UNetImpl, Edm2UNet
// EDM2's magnitude-preserving UNet (Karras et al. 2024, "Analyzing and Improving the Training
// Dynamics of Diffusion Models", Figure 21), the network of EDM2's ImageNet-64 and latent
// ImageNet-512 checkpoints: weights normalised to unit magnitude in every forward pass (and,
// while training, forced back to it: forced weight normalisation), magnitude-preserving SiLU,
// sums and concatenations, pixel norm in the encoder and on attention's q/k/v, no biases or
// group norms, a learned output gain and the learned uncertainty head (logvar_*), which only
// EDM2's loss reads and inference ignores. Module names are EDM2's with its `unet.` dropped,
// so its state dicts load without renaming.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "models/feature_taps.h"

namespace distillery {

class Config;
class ConfigSchema;

struct Edm2UNetConfig {
  int64_t channels = 3;                          // image channels, in and out (EDM2's img_channels)
  int64_t resolution = 64;
  int64_t model_channels = 192;
  std::vector<int64_t> channel_mult = {1, 2, 3, 4};
  int64_t channel_mult_noise = 0;                // 0: channel_mult[0], EDM2's choice
  int64_t channel_mult_emb = 0;                  // 0: max(channel_mult)
  int64_t blocks_per_level = 3;
  std::vector<int64_t> attn_resolutions = {16, 8};
  int64_t channels_per_head = 64;
  double dropout = 0.0;
  int64_t num_classes = 0;
  double label_dropout = 0.0;
  double label_balance = 0.5, concat_balance = 0.5, res_balance = 0.3, attn_balance = 0.3;
  double clip_act = 256;                         // 0: no clipping
  int64_t logvar_channels = 128;                 // width of the uncertainty head (EDM2 always has one)
};

// The keys only EDM2's UNet reads (label_balance, concat_balance, res_balance, attn_balance,
// clip_act, logvar_channels), under `prefix`.
void add_edm2_unet_fields(ConfigSchema& schema, const std::string& prefix);
// Reads those and the UNet's shared keys; channel_mult_noise, channel_mult_emb and
// channels_per_head left unset take EDM2's own defaults, not the other networks'.
Edm2UNetConfig edm2_unet_config_from(const Config& config, const std::string& prefix);
// The config as built: channel_mult_noise and channel_mult_emb of 0 replaced by EDM2's choices.
Edm2UNetConfig resolved(Edm2UNetConfig config);
std::string edm2_unet_config_json(const Edm2UNetConfig& config);

class Edm2UNetImpl : public torch::nn::Module {
 public:
  explicit Edm2UNetImpl(Edm2UNetConfig config);
  // As SongUNetImpl::forward.
  at::Tensor forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels);
  // Taps "enc.<name>" and "dec.<name>" after each encoder and decoder block, under EDM2's names.
  const std::vector<FeatureTap>& feature_taps() const { return taps_; }
  void features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit);
  const Edm2UNetConfig& config() const { return config_; }

 private:
  at::Tensor run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit);

  Edm2UNetConfig config_;
  std::vector<FeatureTap> taps_;
  at::Tensor out_gain_;
  std::shared_ptr<torch::nn::Module> emb_fourier_, emb_noise_, emb_label_, out_conv_;
  torch::nn::ModuleDict enc_{nullptr}, dec_{nullptr};
};
TORCH_MODULE(Edm2UNet);

}  // namespace distillery
