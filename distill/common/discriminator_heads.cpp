#include "distill/common/discriminator_heads.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include <algorithm>
#include <set>

#include "core/config.h"
#include "core/error.h"
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

}  // namespace

DiscriminatorHeadsImpl::DiscriminatorHeadsImpl(const std::vector<FeatureTap>& taps) {
  DISTILLERY_CHECK(!taps.empty(), Error("a discriminator needs at least one feature tap"));
  for (const auto& tap : taps) {
    const auto& s = tap.shape;
    DISTILLERY_CHECK((s.size() == 3 && s[0] > 0 && s[1] > 0 && s[1] == s[2]) || (s.size() == 1 && s[0] > 0),
                     Error(fmt::format("no discriminator head fits the features at tap '{}'", tap.name))
                         .expected("[C, H, W] with H = W, or [D]").got(fmt::format("[{}]", fmt::join(s, ", "))));
    heads_.push_back(register_module(std::to_string(heads_.size()), s.size() == 3 ? image_head(s[0], s[1]) : vector_head(s[0])));
    names_.push_back(tap.name);
  }
}

at::Tensor DiscriminatorHeadsImpl::forward(const FeatureMap& features) {
  std::vector<at::Tensor> logits;
  for (size_t k = 0; k < names_.size(); ++k) {
    const auto found = features.find(names_[k]);
    DISTILLERY_CHECK(found != features.end(), Error(fmt::format("the discriminator head of tap '{}' was given no features for it", names_[k])));
    logits.push_back(heads_[k]->forward(found->second).flatten(1));
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
