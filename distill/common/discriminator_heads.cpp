#include "distill/common/discriminator_heads.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <iterator>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "models/edm_layers.h"
#include "models/unet.h"

namespace distillery {

namespace {

torch::nn::Sequential image_head(int64_t channels, int64_t side) {
  torch::nn::Sequential head;
  const auto norm_silu = [&] {
    head->push_back(torch::nn::GroupNorm(norm_groups(channels), channels));
    head->push_back(torch::nn::SiLU());
  };
  if (side >= 4) {
    head->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 4).stride(2).padding(1)));
    side /= 2;
    norm_silu();
  }
  head->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, side)));
  norm_silu();
  head->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 1, 1)));
  return head;
}

torch::nn::Sequential vector_head(int64_t width) {
  return torch::nn::Sequential(torch::nn::Linear(width, width), torch::nn::SiLU(), torch::nn::Linear(width, 1));
}

// Both kinds of head keep their width up to the last layer.
int64_t hidden_width(const FeatureTap& tap) { return tap.shape[0]; }

// Channels of σ's positional embedding, of EDM's c_noise = ln(σ)/4, that a noise-level MLP reads.
constexpr int64_t kNoiseEmbeddingChannels = 32;

}  // namespace

DiscriminatorHeadsImpl::DiscriminatorHeadsImpl(const std::vector<FeatureTap>& taps, int64_t num_classes, bool noise_conditional)
    : num_classes_(num_classes) {
  DISTILLERY_CHECK(!taps.empty(), Error("a discriminator needs at least one feature tap"));
  for (const auto& tap : taps) {
    const auto& s = tap.shape;
    DISTILLERY_CHECK((s.size() == 3 && s[0] > 0 && s[1] > 0 && s[1] == s[2]) || (s.size() == 1 && s[0] > 0),
                     Error(fmt::format("no discriminator head fits the features at tap '{}'", tap.name))
                         .expected("[C, H, W] with H = W, or [D]").got(fmt::format("[{}]", fmt::join(s, ", "))));
    heads_.push_back(register_module(std::to_string(heads_.size()), s.size() == 3 ? image_head(s[0], s[1]) : vector_head(s[0])));
    names_.push_back(tap.name);
  }
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < taps.size() && num_classes_ > 0; ++k) {
    class_embeddings_.push_back(register_module("class_" + std::to_string(k), torch::nn::Embedding(num_classes_, hidden_width(taps[k]))));
    class_embeddings_.back()->weight.zero_();
  }
  for (size_t k = 0; k < taps.size() && noise_conditional; ++k) {
    const auto width = hidden_width(taps[k]);
    torch::nn::Linear last(width, width);
    last->weight.zero_();
    last->bias.zero_();
    noise_embeddings_.push_back(register_module(
        "noise_" + std::to_string(k), torch::nn::Sequential(torch::nn::Linear(kNoiseEmbeddingChannels, width), torch::nn::SiLU(), last)));
  }
}

at::Tensor DiscriminatorHeadsImpl::forward(const FeatureMap& features, const at::Tensor& labels, const at::Tensor& sigma) {
  if (num_classes_ > 0)
    DISTILLERY_CHECK(labels.defined() && labels.dim() == 1 && labels.scalar_type() == torch::kLong,
                     Error("class-conditional discriminator heads need one int64 label per row").expected("labels of shape [N]"));
  at::Tensor noise_input;
  if (noise_conditional()) {
    DISTILLERY_CHECK(sigma.defined() && sigma.dim() == 1, Error("noise-conditional discriminator heads need the σ each row was read at")
                                                              .expected("σ of shape [N]"));
    noise_input = positional_embedding(sigma.log() / 4, kNoiseEmbeddingChannels, false);
  }
  const bool conditional = num_classes_ > 0 || noise_conditional();
  std::vector<at::Tensor> logits;
  for (size_t k = 0; k < names_.size(); ++k) {
    const auto found = features.find(names_[k]);
    DISTILLERY_CHECK(found != features.end(), Error(fmt::format("the discriminator head of tap '{}' was given no features for it", names_[k])));
    if (!conditional) {
      logits.push_back(heads_[k]->forward(found->second).flatten(1));
      continue;
    }
    // The head's layers up to its last, then the last layer's logit plus the projection on
    // the condition's direction: the class's embedding, the noise level's, or their sum.
    auto hidden = found->second;
    auto layer = heads_[k]->begin();
    for (; std::next(layer) != heads_[k]->end(); ++layer) hidden = layer->forward(hidden);
    const auto unconditional = layer->forward(hidden).flatten(1);
    at::Tensor direction;
    if (num_classes_ > 0) direction = class_embeddings_[k]->forward(labels);
    if (noise_conditional()) {
      const auto of_noise = noise_embeddings_[k]->forward(noise_input);
      direction = direction.defined() ? direction + of_noise : of_noise;
    }
    logits.push_back(unconditional + (hidden.flatten(1) * direction).sum(1, true));
  }
  return torch::cat(logits, 1);
}

std::vector<FeatureTap> configured_taps(const Config& config, const std::string& key, const std::vector<FeatureTap>& available) {
  const auto names = config.get_string_list(key);
  DISTILLERY_CHECK(!names.empty() && std::set<std::string>(names.begin(), names.end()).size() == names.size(),
                   Error("the discriminator's taps must be distinct, and at least one").file(config.source()).field(key)
                       .got(fmt::format("[{}]", fmt::join(names, ", "))));
  std::vector<std::string> known;
  for (const auto& tap : available) known.push_back(tap.name);
  std::vector<FeatureTap> taps;
  for (const auto& name : names) {
    const auto tap = std::find_if(available.begin(), available.end(), [&](const FeatureTap& t) { return t.name == name; });
    DISTILLERY_CHECK(tap != available.end(), Error(fmt::format("the network has no feature tap '{}'", name)).file(config.source()).field(key)
                                                 .expected(fmt::format("one of {}", fmt::join(known, ", "))));
    taps.push_back(*tap);
  }
  return taps;
}

}  // namespace distillery
