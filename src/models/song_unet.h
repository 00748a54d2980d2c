// defines: SongUNetConfig, add_song_unet_fields, song_unet_config_from, song_unet_config_json, SongUNetImpl, SongUNet
// DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs") as EDM
// published them (its SongUNet): the networks of EDM's CIFAR-10, FFHQ and AFHQv2 checkpoints.
// DDPM++: positional embedding, standard encoder and decoder, box resampling filter [1,1].
// NCSN++: Fourier embedding twice as wide, residual encoder, filter [1,3,3,1]. The skip
// encoder and decoder of the original code are here too. Module names are EDM's
// (map_noise, map_label, map_augment, map_layer0/1, enc.<res>x<res>_..., dec.<res>x<res>_...),
// so its state dicts load without renaming.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "models/edm_layers.h"
#include "models/feature_taps.h"

namespace distillery {

class Config;
class ConfigSchema;

struct SongUNetConfig : EdmUNetCommon {
  SongUNetConfig();                               // EDM's SongUNet defaults
  std::string noise_embedding = "positional";     // EDM's embedding_type: positional | fourier
  int64_t channel_mult_noise = 1;                 // noise embedding width = model_channels × this
  std::string encoder_type = "standard";          // standard | skip | residual
  std::string decoder_type = "standard";          // standard | skip
  std::vector<int64_t> resample_filter = {1, 1};
};

// The keys SongUNet and ADM read beyond the UNet's (encoder_type, decoder_type,
// resample_filter, channel_mult_noise, channel_mult_emb, augment_dim), under `prefix`.
void add_song_unet_fields(ConfigSchema& schema, const std::string& prefix);
SongUNetConfig song_unet_config_from(const Config& config, const std::string& prefix);
// The model section of a denoiser file's config (kind song_unet).
std::string song_unet_config_json(const SongUNetConfig& config);

class SongUNetImpl : public torch::nn::Module {
 public:
  explicit SongUNetImpl(SongUNetConfig config);
  // x_in: [N, C, H, W] scaled by c_in, c_noise: [N], labels: [N] int64 (−1: none) or undefined
  // for unconditional networks. Returns the raw output F.
  at::Tensor forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels);
  // Taps "enc.<name>" and "dec.<name>" after each encoder and decoder block, under EDM's names.
  const std::vector<FeatureTap>& feature_taps() const { return taps_; }
  void features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit);
  const SongUNetConfig& config() const { return config_; }

 private:
  enum class Role { Block, Conv, AuxDown, AuxSkip, AuxResidual, AuxUp, AuxNorm, AuxConv };
  at::Tensor embed(const at::Tensor& c_noise, const at::Tensor& labels);
  at::Tensor run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit);

  SongUNetConfig config_;
  std::vector<FeatureTap> taps_;
  FourierEmbedding fourier_{nullptr};
  torch::nn::Linear map_label_{nullptr}, map_augment_{nullptr}, map_layer0_{nullptr}, map_layer1_{nullptr};
  torch::nn::ModuleDict enc_{nullptr}, dec_{nullptr};
  std::vector<Role> enc_roles_, dec_roles_;  // in the dictionaries' order
};
TORCH_MODULE(SongUNet);

}  // namespace distillery
