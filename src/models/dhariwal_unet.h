// defines: DhariwalUNetConfig, dhariwal_unet_config_from, dhariwal_unet_config_json, DhariwalUNetImpl, DhariwalUNet
// ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis") as EDM published
// it (its DhariwalUNet): the network of EDM's ImageNet-64 checkpoint. Adaptive group norm
// (scale and shift from the embedding), attention heads of 64 channels wherever a block at an
// attention resolution has at least 64, labels added to the embedding after its MLP. Module
// names are EDM's, so its state dicts load without renaming.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "models/edm_layers.h"
#include "models/feature_taps.h"

namespace distillery {

struct DhariwalUNetConfig : EdmUNetCommon {
  DhariwalUNetConfig();  // EDM's DhariwalUNet defaults
};

// Reads the keys add_unet_fields and add_song_unet_fields declare.
DhariwalUNetConfig dhariwal_unet_config_from(const Config& config, const std::string& prefix);
std::string dhariwal_unet_config_json(const DhariwalUNetConfig& config);

class DhariwalUNetImpl : public torch::nn::Module {
 public:
  explicit DhariwalUNetImpl(DhariwalUNetConfig config);
  // As SongUNetImpl::forward.
  at::Tensor forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels);
  // Taps "enc.<name>" and "dec.<name>" after each encoder and decoder block, under EDM's names.
  const std::vector<FeatureTap>& feature_taps() const { return taps_; }
  void features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit);
  const DhariwalUNetConfig& config() const { return config_; }

 private:
  at::Tensor embed(const at::Tensor& c_noise, const at::Tensor& labels);
  at::Tensor run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit);

  DhariwalUNetConfig config_;
  std::vector<FeatureTap> taps_;
  torch::nn::Linear map_augment_{nullptr}, map_layer0_{nullptr}, map_layer1_{nullptr}, map_label_{nullptr};
  torch::nn::ModuleDict enc_{nullptr}, dec_{nullptr};
  torch::nn::GroupNorm out_norm_{nullptr};
  EdmConv2d out_conv_{nullptr};
};
TORCH_MODULE(DhariwalUNet);

}  // namespace distillery
