#include "models/edm_layers.h"

#include <fmt/format.h>
#include <torch/nn/functional.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/config.h"
#include "core/error.h"
#include "models/keyed_dropout.h"
#include "kernels/attention.h"

namespace distillery {

namespace F = torch::nn::functional;

namespace {

at::Tensor initial_values(const std::vector<int64_t>& shape, EdmInit::Mode mode, int64_t fan_in, int64_t fan_out) {
  switch (mode) {
    case EdmInit::Mode::XavierUniform: return std::sqrt(6.0 / static_cast<double>(fan_in + fan_out)) * (torch::rand(shape) * 2 - 1);
    case EdmInit::Mode::KaimingUniform: return std::sqrt(3.0 / static_cast<double>(fan_in)) * (torch::rand(shape) * 2 - 1);
    case EdmInit::Mode::KaimingNormal: return std::sqrt(1.0 / static_cast<double>(fan_in)) * torch::randn(shape);
  }
  throw Error("unhandled weight initialisation");
}

}  // namespace

void read_edm_unet_common(const Config& config, const std::string& prefix, EdmUNetCommon& c) {
  c.in_channels = config.get_int(prefix + "in_channels");
  c.out_channels = config.get_int(prefix + "out_channels");
  c.resolution = config.get_int(prefix + "resolution");
  c.model_channels = config.get_int(prefix + "model_channels");
  c.channel_mult = config.get_int_list(prefix + "channel_mult");
  c.channel_mult_emb = config.get_int(prefix + "channel_mult_emb");
  c.blocks_per_level = config.get_int(prefix + "blocks_per_level");
  c.attn_resolutions = config.get_int_list(prefix + "attn_resolutions");
  c.dropout = config.get_float(prefix + "dropout");
  c.num_classes = config.get_int(prefix + "num_classes");
  c.augment_dim = config.get_int(prefix + "augment_dim");
  c.label_dropout = config.get_float(prefix + "label_dropout");
}

void write_edm_unet_common(const EdmUNetCommon& c, nlohmann::json& model) {
  model.update({{"in_channels", c.in_channels},           {"out_channels", c.out_channels},   {"resolution", c.resolution},
                {"model_channels", c.model_channels},     {"channel_mult", c.channel_mult},   {"channel_mult_emb", c.channel_mult_emb},
                {"blocks_per_level", c.blocks_per_level}, {"attn_resolutions", c.attn_resolutions}, {"dropout", c.dropout},
                {"num_classes", c.num_classes},           {"augment_dim", c.augment_dim},     {"label_dropout", c.label_dropout}});
}

torch::nn::Linear edm_linear(int64_t in, int64_t out, bool bias, const EdmInit& init) {
  torch::nn::Linear layer(torch::nn::LinearOptions(in, out).bias(bias));
  torch::NoGradGuard no_grad;
  layer->weight.copy_(initial_values({out, in}, init.mode, in, out) * init.weight);
  if (bias) layer->bias.copy_(initial_values({out}, init.mode, in, out) * init.bias);
  return layer;
}

torch::nn::GroupNorm edm_group_norm(int64_t channels, double eps) {
  const int64_t groups = std::min<int64_t>(32, channels / 4);
  DISTILLERY_CHECK(groups >= 1, Error(fmt::format("a group norm over {} channels", channels)).expected("at least 4 channels per group"));
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

EdmConv2dImpl::EdmConv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, bool bias, EdmResample resample,
                             const std::vector<int64_t>& filter, bool fused, const EdmInit& init)
    : in_channels_(in_channels), out_channels_(out_channels), resample_(resample), fused_(fused) {
  DISTILLERY_CHECK(!fused || (resample == EdmResample::Down && kernel > 0),
                   Error("a fused resampling convolution").expected("downsampling with a kernel, as EDM's networks use it"));
  if (kernel > 0) {
    const int64_t fan_in = in_channels * kernel * kernel, fan_out = out_channels * kernel * kernel;
    weight_ = register_parameter("weight", initial_values({out_channels, in_channels, kernel, kernel}, init.mode, fan_in, fan_out) * init.weight);
    if (bias) bias_ = register_parameter("bias", initial_values({out_channels}, init.mode, fan_in, fan_out) * init.bias);
  }
  if (resample != EdmResample::None) {
    DISTILLERY_CHECK(!filter.empty(), Error("an empty resampling filter").field("model.resample_filter").expected("a list such as [1, 1] or [1, 3, 3, 1]"));
    auto f = torch::tensor(std::vector<float>(filter.begin(), filter.end()));
    const double sum = std::accumulate(filter.begin(), filter.end(), 0.0);
    DISTILLERY_CHECK(sum > 0, Error("a resampling filter that sums to zero").field("model.resample_filter").expected("positive taps"));
    resample_filter_ = register_buffer("resample_filter", (torch::outer(f, f) / (sum * sum)).unsqueeze(0).unsqueeze(1));
  }
}

at::Tensor EdmConv2dImpl::forward(const at::Tensor& input) {
  const auto w = weight_.defined() ? weight_.to(input.scalar_type()) : at::Tensor();
  const auto f = resample_filter_.defined() ? resample_filter_.to(input.scalar_type()) : at::Tensor();
  const int64_t w_pad = w.defined() ? w.size(-1) / 2 : 0;
  const int64_t f_pad = f.defined() ? (f.size(-1) - 1) / 2 : 0;
  auto x = input;
  if (fused_) {
    x = F::conv2d(x, w, F::Conv2dFuncOptions().padding(w_pad + f_pad));
    x = F::conv2d(x, f.tile({out_channels_, 1, 1, 1}), F::Conv2dFuncOptions().groups(out_channels_).stride(2));
  } else {
    if (resample_ == EdmResample::Up)
      x = F::conv_transpose2d(x, (f * 4).tile({in_channels_, 1, 1, 1}), F::ConvTranspose2dFuncOptions().groups(in_channels_).stride(2).padding(f_pad));
    if (resample_ == EdmResample::Down)
      x = F::conv2d(x, f.tile({in_channels_, 1, 1, 1}), F::Conv2dFuncOptions().groups(in_channels_).stride(2).padding(f_pad));
    if (w.defined()) x = F::conv2d(x, w, F::Conv2dFuncOptions().padding(w_pad));
  }
  if (bias_.defined()) x = x + bias_.to(x.scalar_type()).reshape({1, -1, 1, 1});
  return x;
}

EdmUNetBlockImpl::EdmUNetBlockImpl(int64_t in_channels, int64_t out_channels, const EdmBlockOptions& o)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      num_heads_(!o.attention ? 0 : o.num_heads > 0 ? o.num_heads : out_channels / o.channels_per_head),
      dropout_(o.dropout),
      skip_scale_(o.skip_scale),
      adaptive_scale_(o.adaptive_scale) {
  norm0_ = register_module("norm0", edm_group_norm(in_channels, o.eps));
  conv0_ = register_module("conv0", EdmConv2d(in_channels, out_channels, 3, true, o.resample, o.resample_filter, false, o.init));
  affine_ = register_module("affine", edm_linear(o.emb_channels, out_channels * (o.adaptive_scale ? 2 : 1), true, o.init));
  norm1_ = register_module("norm1", edm_group_norm(out_channels, o.eps));
  conv1_ = register_module("conv1", EdmConv2d(out_channels, out_channels, 3, true, EdmResample::None, kNoFilter, false, o.init_zero));
  if (out_channels != in_channels || o.resample != EdmResample::None) {
    const int64_t kernel = o.resample_proj || out_channels != in_channels ? 1 : 0;
    skip_ = register_module("skip", EdmConv2d(in_channels, out_channels, kernel, true, o.resample, o.resample_filter, false, o.init));
  }
  if (num_heads_ > 0) {
    DISTILLERY_CHECK(out_channels % num_heads_ == 0, Error(fmt::format("attention: {} channels do not split into {} heads", out_channels, num_heads_)));
    norm2_ = register_module("norm2", edm_group_norm(out_channels, o.eps));
    qkv_ = register_module("qkv", EdmConv2d(out_channels, out_channels * 3, 1, true, EdmResample::None, kNoFilter, false, o.init_attn));
    proj_ = register_module("proj", EdmConv2d(out_channels, out_channels, 1, true, EdmResample::None, kNoFilter, false, o.init_zero));
  }
}

at::Tensor EdmUNetBlockImpl::forward(const at::Tensor& input, const at::Tensor& emb) {
  auto x = conv0_->forward(torch::silu(norm0_->forward(input)));
  const auto params = affine_->forward(emb).unsqueeze(2).unsqueeze(3).to(x.scalar_type());
  if (adaptive_scale_) {
    const auto scale_shift = params.chunk(2, 1);
    x = torch::silu(torch::addcmul(scale_shift[1], norm1_->forward(x), scale_shift[0] + 1));
  } else {
    x = torch::silu(norm1_->forward(x + params));
  }
  x = conv1_->forward(keyed_dropout(x, dropout_, is_training()));
  x = (x + (skip_ ? skip_->forward(input) : input)) * skip_scale_;
  if (num_heads_ > 0) {
    const int64_t n = x.size(0), head_dim = x.size(1) / num_heads_, tokens = x.size(2) * x.size(3);
    // The projection's 3C channels are laid out [head][channel][q, k, v], as EDM's reshape reads them.
    const auto qkv = qkv_->forward(norm2_->forward(x)).reshape({n, num_heads_, head_dim, 3, tokens}).permute({3, 0, 1, 4, 2}).unbind(0);
    const auto a = attention(qkv[0], qkv[1], qkv[2]).transpose(2, 3).reshape(x.sizes());
    x = (proj_->forward(a) + x) * skip_scale_;
  }
  return x;
}

FourierEmbeddingImpl::FourierEmbeddingImpl(int64_t channels) { freqs_ = register_buffer("freqs", torch::randn({channels / 2}) * 16.0); }

at::Tensor FourierEmbeddingImpl::forward(const at::Tensor& c_noise) {
  const auto angles = torch::outer(c_noise, (2 * M_PI * freqs_).to(c_noise.scalar_type()));
  return torch::cat({angles.cos(), angles.sin()}, 1);
}

at::Tensor positional_embedding(const at::Tensor& c_noise, int64_t channels, bool endpoint) {
  const int64_t half = channels / 2;
  const auto j = torch::arange(half, c_noise.options().dtype(torch::kFloat32)) / static_cast<double>(half - (endpoint ? 1 : 0));
  const auto angles = torch::outer(c_noise, torch::pow(1e-4, j).to(c_noise.scalar_type()));
  return torch::cat({angles.cos(), angles.sin()}, 1);
}

at::Tensor class_embedding_input(const at::Tensor& labels, int64_t num_classes, c10::ScalarType dtype) {
  DISTILLERY_CHECK(labels.defined(), Error("this model is class-conditional: labels are required (use −1 for none)"));
  return F::one_hot(labels.clamp_min(0), num_classes).to(dtype) * labels.ge(0).unsqueeze(1);
}

}  // namespace distillery
