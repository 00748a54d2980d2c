#include "models/dhariwal_unet.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"

namespace distillery {

namespace {
constexpr int64_t kChannelsPerHead = 64;
}

DhariwalUNetConfig::DhariwalUNetConfig() {
  resolution = 64;
  model_channels = 192;
  channel_mult = {1, 2, 3, 4};
  blocks_per_level = 3;
  attn_resolutions = {32, 16, 8};
}

DhariwalUNetConfig dhariwal_unet_config_from(const Config& config, const std::string& prefix) {
  DhariwalUNetConfig c;
  read_edm_unet_common(config, prefix, c);
  return c;
}

std::string dhariwal_unet_config_json(const DhariwalUNetConfig& c) {
  nlohmann::json model = {{"kind", "dhariwal_unet"}};
  write_edm_unet_common(c, model);
  return model.dump();
}

DhariwalUNetImpl::DhariwalUNetImpl(DhariwalUNetConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  const int64_t levels = static_cast<int64_t>(c.channel_mult.size());
  DISTILLERY_CHECK(levels >= 1 && c.resolution % (int64_t{1} << (levels - 1)) == 0,
                   Error(fmt::format("resolution {} cannot be halved {} times", c.resolution, levels - 1)).field("model.resolution"));
  DISTILLERY_CHECK(c.model_channels % 2 == 0 && c.model_channels >= 4,
                   Error("the noise embedding pairs cos and sin").field("model.model_channels").expected("an even number ≥ 4"));
  const int64_t emb_channels = c.model_channels * c.channel_mult_emb;
  const EdmInit init{EdmInit::Mode::KaimingUniform, std::sqrt(1.0 / 3), std::sqrt(1.0 / 3)}, init_zero{EdmInit::Mode::KaimingUniform, 0, 0};
  const EdmBlockOptions block{.emb_channels = emb_channels, .channels_per_head = kChannelsPerHead, .dropout = c.dropout,
                              .init = init, .init_zero = init_zero, .init_attn = init};
  const auto with = [&](EdmResample resample, bool attention) {
    auto o = block;
    o.resample = resample;
    o.attention = attention;
    return o;
  };
  const auto attends = [&](int64_t res) { return std::find(c.attn_resolutions.begin(), c.attn_resolutions.end(), res) != c.attn_resolutions.end(); };

  if (c.augment_dim > 0) map_augment_ = register_module("map_augment", edm_linear(c.augment_dim, c.model_channels, false, init_zero));
  map_layer0_ = register_module("map_layer0", edm_linear(c.model_channels, emb_channels, true, init));
  map_layer1_ = register_module("map_layer1", edm_linear(emb_channels, emb_channels, true, init));
  if (c.num_classes > 0)
    map_label_ = register_module("map_label",
                                 edm_linear(c.num_classes, emb_channels, false, {EdmInit::Mode::KaimingNormal, std::sqrt(static_cast<double>(c.num_classes))}));

  enc_ = register_module("enc", torch::nn::ModuleDict());
  dec_ = register_module("dec", torch::nn::ModuleDict());
  std::vector<int64_t> skips;
  int64_t cout = c.in_channels;
  const auto add = [&](torch::nn::ModuleDict& dict, const std::string& name, std::shared_ptr<torch::nn::Module> module, int64_t channels, int64_t res) {
    dict->update({{name, std::move(module)}});
    taps_.push_back({fmt::format("{}.{}", &dict == &enc_ ? "enc" : "dec", name), {channels, res, res}});
  };
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t res = c.resolution >> level;
    const auto prefix = fmt::format("{}x{}_", res, res);
    const int64_t level_channels = c.model_channels * c.channel_mult[static_cast<size_t>(level)];
    if (level == 0) {
      const int64_t cin = cout;
      cout = level_channels;
      add(enc_, prefix + "conv", EdmConv2d(cin, cout, 3, true, EdmResample::None, kNoFilter, false, init).ptr(), cout, res);
    } else {
      add(enc_, prefix + "down", EdmUNetBlock(cout, cout, with(EdmResample::Down, false)).ptr(), cout, res);
    }
    skips.push_back(cout);
    for (int64_t i = 0; i < c.blocks_per_level; ++i) {
      const int64_t cin = cout;
      cout = level_channels;
      add(enc_, fmt::format("{}block{}", prefix, i), EdmUNetBlock(cin, cout, with(EdmResample::None, attends(res))).ptr(), cout, res);
      skips.push_back(cout);
    }
  }
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t res = c.resolution >> level;
    const auto prefix = fmt::format("{}x{}_", res, res);
    if (level == levels - 1) {
      add(dec_, prefix + "in0", EdmUNetBlock(cout, cout, with(EdmResample::None, true)).ptr(), cout, res);
      add(dec_, prefix + "in1", EdmUNetBlock(cout, cout, with(EdmResample::None, false)).ptr(), cout, res);
    } else {
      add(dec_, prefix + "up", EdmUNetBlock(cout, cout, with(EdmResample::Up, false)).ptr(), cout, res);
    }
    for (int64_t i = 0; i <= c.blocks_per_level; ++i) {
      const int64_t cin = cout + skips.back();
      skips.pop_back();
      cout = c.model_channels * c.channel_mult[static_cast<size_t>(level)];
      add(dec_, fmt::format("{}block{}", prefix, i), EdmUNetBlock(cin, cout, with(EdmResample::None, attends(res))).ptr(), cout, res);
    }
  }
  out_norm_ = register_module("out_norm", edm_group_norm(cout, 1e-5));
  out_conv_ = register_module("out_conv", EdmConv2d(cout, c.out_channels, 3, true, EdmResample::None, kNoFilter, false, init_zero));
}

at::Tensor DhariwalUNetImpl::embed(const at::Tensor& c_noise, const at::Tensor& labels) {
  auto emb = torch::silu(map_layer0_->forward(positional_embedding(c_noise.to(torch::kFloat32), config_.model_channels, false)));
  emb = map_layer1_->forward(emb);
  if (map_label_) emb = emb + map_label_->forward(class_embedding_input(labels, config_.num_classes));
  return torch::silu(emb);
}

at::Tensor DhariwalUNetImpl::run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit) {
  size_t next_tap = 0;
  const auto ends_here = [&](const at::Tensor& features) { return visit && !(*visit)(taps_[next_tap++].name, features); };
  const auto emb = embed(c_noise, labels);
  std::vector<at::Tensor> skips;
  auto x = x_in;
  for (const auto& item : *enc_) {
    auto* block = item.value()->as<EdmUNetBlockImpl>();
    x = block ? block->forward(x, emb) : item.value()->as<EdmConv2dImpl>()->forward(x);
    skips.push_back(x);
    if (ends_here(x)) return {};
  }
  for (const auto& item : *dec_) {
    auto* block = item.value()->as<EdmUNetBlockImpl>();
    if (x.size(1) != block->in_channels()) {
      x = torch::cat({x, skips.back()}, 1);
      skips.pop_back();
    }
    x = block->forward(x, emb);
    if (ends_here(x)) return {};
  }
  return out_conv_->forward(torch::silu(out_norm_->forward(x)));
}

at::Tensor DhariwalUNetImpl::forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels) { return run(x_in, c_noise, labels, nullptr); }

void DhariwalUNetImpl::features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit) {
  run(x_in, c_noise, labels, &visit);
}

}  // namespace distillery
