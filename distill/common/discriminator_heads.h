// defines: DiscriminatorHeadsImpl, DiscriminatorHeads, configured_taps
// Realism heads on named feature taps of a network (models/feature_taps.h): one small head per
// tap, each giving one logit per row. DMD2 puts them on its critic (its classifier branch reads
// the bottleneck); ADD and LADD put one on each of several layers of a frozen network. A
// method turns the logits into its own GAN loss (non-saturating, hinge) per tap.
// Class-conditional heads add a projection term (Miyato & Koyama 2018), as ADD conditions its
// heads: ⟨embed(y), h⟩ on each head's last hidden features h. A head that ignores the label can
// be fooled by any realistic image, so a student may keep to a few typical ones per class.
// Noise-conditional heads add the same kind of term for the noise level σ the network read the
// images at, ⟨g(σ), h⟩ with g a small MLP of σ's positional embedding, as LADD conditions its
// heads on the noise level: without it one head must judge every σ alike, though what tells a
// generated image from a real one differs between high and low noise.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/feature_taps.h"

namespace distillery {

class Config;

class DiscriminatorHeadsImpl : public torch::nn::Module {
 public:
  // One head per tap, in the given order, sized to its features: for [C, H, W], a strided 4×4
  // convolution halving the side (when it is at least 4), a convolution as wide as what is
  // left, then a 1×1 convolution to one logit, with GroupNorm + SiLU in between; for [D], two
  // linear layers with SiLU. Initial weights come from torch's generator, in tap order. With
  // `num_classes` > 0 each head also gets a class embedding for the projection, zero at first
  // (the heads start as the unconditional ones) and created after every head, so the heads'
  // own initial weights do not depend on it. With `noise_conditional` each head also gets a
  // noise-level MLP, created after those, whose last layer is zero at first for the same reason.
  explicit DiscriminatorHeadsImpl(const std::vector<FeatureTap>& taps, int64_t num_classes = 0, bool noise_conditional = false);
  // The tap names, to ask the network for (NetworkDenoiser::features).
  const std::vector<std::string>& taps() const { return names_; }
  // [N, taps] logits: column k from the features at the k-th tap (an error names a missing one).
  // Class-conditional heads need the rows' labels (int64, in [0, num_classes)); noise-conditional
  // ones the σ each row's features were read at ([N]).
  at::Tensor forward(const FeatureMap& features, const at::Tensor& labels = {}, const at::Tensor& sigma = {});
  int64_t num_classes() const { return num_classes_; }
  bool noise_conditional() const { return !noise_embeddings_.empty(); }

 private:
  std::vector<std::string> names_;
  std::vector<torch::nn::Sequential> heads_;  // registered as "0", "1", ... in tap order
  std::vector<torch::nn::Embedding> class_embeddings_;  // "class_0", "class_1", ...: empty when unconditional
  std::vector<torch::nn::Sequential> noise_embeddings_;  // "noise_0", "noise_1", ...: empty unless noise-conditional
  int64_t num_classes_;
};
TORCH_MODULE(DiscriminatorHeads);

// The taps a recipe's string-list `key` names, looked up in `available` (a network's taps):
// errors name the key for an empty list, a repeated name, or a name the network lacks (with
// the names it has).
std::vector<FeatureTap> configured_taps(const Config& config, const std::string& key, const std::vector<FeatureTap>& available);

}  // namespace distillery
