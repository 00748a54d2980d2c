#include "models/unet.h"

#include <fmt/format.h>
#include <torch/nn/functional.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "models/keyed_dropout.h"
#include "models/edm_layers.h"
#include "kernels/attention.h"

namespace distillery {

namespace F = torch::nn::functional;

int64_t norm_groups(int64_t channels) { return std::max<int64_t>(1, std::min<int64_t>(32, channels / 4)); }

namespace {

enum class Resample { None, Down, Up };

// The decoder opens with two blocks at the lowest resolution that take no skip input.
constexpr size_t kMiddleBlocks = 2;

// Residual block: GroupNorm-SiLU-conv, modulated by the embedding (scale, shift), then
// GroupNorm-SiLU-dropout-conv, plus the (1×1-projected) input; optionally self-attention.
// Residual sums are scaled by 1/√2 to keep activations at unit variance (DDPM++).
struct UNetBlockImpl : torch::nn::Module {
  UNetBlockImpl(int64_t in, int64_t out, int64_t emb_channels, double dropout_p, bool attend, int64_t channels_per_head,
                Resample resample_mode)
      : dropout(dropout_p), resample(resample_mode), heads(std::max<int64_t>(1, out / channels_per_head)) {
    norm0 = register_module("norm0", torch::nn::GroupNorm(norm_groups(in), in));
    conv0 = register_module("conv0", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)));
    affine = register_module("affine", torch::nn::Linear(emb_channels, 2 * out));
    norm1 = register_module("norm1", torch::nn::GroupNorm(norm_groups(out), out));
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)));
    if (in != out) skip = register_module("skip", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1)));
    if (attend) {
      DISTILLERY_CHECK(out % heads == 0, Error(fmt::format("attention: {} channels do not split into {} heads", out, heads)));
      norm2 = register_module("norm2", torch::nn::GroupNorm(norm_groups(out), out));
      qkv = register_module("qkv", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, 3 * out, 1)));
      proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 1)));
    }
  }

  at::Tensor resampled(const at::Tensor& x) const {
    switch (resample) {
      case Resample::Down: return F::avg_pool2d(x, F::AvgPool2dFuncOptions(2));
      case Resample::Up: return F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kNearest));
      case Resample::None: return x;
    }
    return x;
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb) {
    auto h = conv0->forward(resampled(torch::silu(norm0->forward(x))));
    const auto params = affine->forward(emb).unsqueeze(2).unsqueeze(3);
    const auto scale_shift = params.chunk(2, 1);
    h = torch::silu(scale_shift[1] + norm1->forward(h) * (scale_shift[0] + 1));
    h = conv1->forward(keyed_dropout(h, dropout, is_training()));
    const auto residual = skip ? skip->forward(resampled(x)) : resampled(x);
    auto out = (h + residual) * M_SQRT1_2;
    if (qkv) {
      const int64_t n = out.size(0), c = out.size(1), hw = out.size(2) * out.size(3);
      // [N, 3C, H, W] -> 3 × [N, heads, HW, C/heads]
      const auto parts = qkv->forward(norm2->forward(out)).reshape({n, 3, heads, c / heads, hw}).permute({1, 0, 2, 4, 3}).unbind(0);
      const auto a = attention(parts[0], parts[1], parts[2]).permute({0, 1, 3, 2}).reshape(out.sizes());
      out = (proj->forward(a) + out) * M_SQRT1_2;
    }
    return out;
  }

  double dropout;
  Resample resample;
  int64_t heads;
  torch::nn::GroupNorm norm0{nullptr}, norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv0{nullptr}, conv1{nullptr}, skip{nullptr}, qkv{nullptr}, proj{nullptr};
  torch::nn::Linear affine{nullptr};
};
TORCH_MODULE(UNetBlock);

}  // namespace

void add_unet_fields(ConfigSchema& schema, const std::string& prefix) {
  const UNetConfig d;
  auto list = [](const std::vector<int64_t>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); };
  schema.add({prefix + "in_channels", ConfigType::Int, "unet: image channels in", std::to_string(d.in_channels)}, NumberRange::between(1, 1024));
  schema.add({prefix + "out_channels", ConfigType::Int, "unet: image channels out", std::to_string(d.out_channels)}, NumberRange::between(1, 1024));
  schema.add({prefix + "resolution", ConfigType::Int, "unet: input height = width", std::to_string(d.resolution)}, NumberRange::between(1, 8192));
  schema.add({prefix + "model_channels", ConfigType::Int, "unet: channels at the first level", std::to_string(d.model_channels)}, NumberRange::between(2, 8192));
  schema.add({prefix + "channel_mult", ConfigType::IntList, "unet: channel multiplier per level", list(d.channel_mult)}, NumberRange::between(1, 64));
  schema.add({prefix + "blocks_per_level", ConfigType::Int, "unet: residual blocks per encoder level", std::to_string(d.blocks_per_level)}, NumberRange::between(1, 64));
  schema.add({prefix + "attn_resolutions", ConfigType::IntList, "unet: resolutions with self-attention", list(d.attn_resolutions)}, NumberRange::between(1, 8192));
  schema.add({prefix + "channels_per_head", ConfigType::Int, "unet: attention channels per head", std::to_string(d.channels_per_head)}, NumberRange::between(1, 8192));
  schema.add({prefix + "dropout", ConfigType::Float, "unet: dropout in residual blocks", fmt::format("{}", d.dropout)}, NumberRange::from_below(0, 1));
  schema.add({prefix + "noise_embedding", ConfigType::String, "unet: noise embedding", d.noise_embedding, false, {"positional", "fourier"}});
}

UNetConfig unet_config_from(const Config& config, const std::string& prefix) {
  UNetConfig c;
  c.in_channels = config.get_int(prefix + "in_channels");
  c.out_channels = config.get_int(prefix + "out_channels");
  c.resolution = config.get_int(prefix + "resolution");
  c.model_channels = config.get_int(prefix + "model_channels");
  c.channel_mult = config.get_int_list(prefix + "channel_mult");
  c.blocks_per_level = config.get_int(prefix + "blocks_per_level");
  c.attn_resolutions = config.get_int_list(prefix + "attn_resolutions");
  c.channels_per_head = config.get_int(prefix + "channels_per_head");
  c.dropout = config.get_float(prefix + "dropout");
  c.num_classes = config.get_int(prefix + "num_classes");
  c.label_dropout = config.get_float(prefix + "label_dropout");
  c.noise_embedding = config.get_string(prefix + "noise_embedding");
  c.target_time = config.get_bool(prefix + "target_time");
  return c;
}

UNetImpl::UNetImpl(UNetConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  const int64_t levels = static_cast<int64_t>(c.channel_mult.size());
  DISTILLERY_CHECK(levels >= 1 && c.model_channels > 0 && c.blocks_per_level >= 1 && c.in_channels > 0 && c.out_channels > 0,
                   Error("invalid UNet configuration").field("model").expected("model_channels > 0, blocks_per_level ≥ 1, a non-empty channel_mult"));
  DISTILLERY_CHECK(c.resolution % (int64_t{1} << (levels - 1)) == 0,
                   Error(fmt::format("resolution {} cannot be halved {} times", c.resolution, levels - 1)).field("model.resolution"));
  DISTILLERY_CHECK(c.model_channels % 2 == 0, Error("model_channels must be even (the noise embedding pairs cos and sin)").field("model.model_channels"));
  const int64_t C = c.model_channels, emb = 4 * C;

  if (c.noise_embedding == "fourier") {
    // Random frequencies (scale 16, EDM's NCSN++ choice), fixed at construction and saved with the weights.
    fourier_frequencies_ = register_buffer("fourier_frequencies", torch::randn({C / 2}) * 16.0);
  }
  if (c.num_classes > 0) map_label_ = register_module("map_label", torch::nn::Linear(torch::nn::LinearOptions(c.num_classes, C).bias(false)));
  map_layer0_ = register_module("map_layer0", torch::nn::Linear(C, emb));
  if (c.target_time) {
    map_target_ = register_module("map_target", torch::nn::Linear(C, emb));
    torch::NoGradGuard no_grad;
    map_target_->weight.zero_();
    map_target_->bias.zero_();
  }
  map_layer1_ = register_module("map_layer1", torch::nn::Linear(emb, emb));

  conv_in_ = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, C, 3).padding(1)));
  enc_ = register_module("enc", torch::nn::ModuleList());
  dec_ = register_module("dec", torch::nn::ModuleList());
  auto attends = [&](int64_t res) { return std::find(c.attn_resolutions.begin(), c.attn_resolutions.end(), res) != c.attn_resolutions.end(); };

  std::vector<int64_t> skip_channels = {C};
  int64_t channels = C, res = c.resolution;
  const auto tap = [&](std::string name) { taps_.push_back({std::move(name), {channels, res, res}}); };
  tap("enc.0");
  for (int64_t level = 0; level < levels; ++level) {
    if (level > 0) {
      res /= 2;
      enc_->push_back(UNetBlock(channels, channels, emb, c.dropout, false, c.channels_per_head, Resample::Down));
      skip_channels.push_back(channels);
      tap(fmt::format("enc.{}", enc_->size()));
    }
    for (int64_t i = 0; i < c.blocks_per_level; ++i) {
      const int64_t out = C * c.channel_mult[static_cast<size_t>(level)];
      enc_->push_back(UNetBlock(channels, out, emb, c.dropout, attends(res), c.channels_per_head, Resample::None));
      channels = out;
      skip_channels.push_back(channels);
      tap(fmt::format("enc.{}", enc_->size()));
    }
  }
  for (int64_t level = levels - 1; level >= 0; --level) {
    if (level == levels - 1) {
      // The middle (kMiddleBlocks): one block with attention, one without, no skip input.
      dec_->push_back(UNetBlock(channels, channels, emb, c.dropout, true, c.channels_per_head, Resample::None));
      dec_->push_back(UNetBlock(channels, channels, emb, c.dropout, false, c.channels_per_head, Resample::None));
      dec_takes_skip_.insert(dec_takes_skip_.end(), {false, false});
      tap("bottleneck");
    } else {
      res *= 2;
      dec_->push_back(UNetBlock(channels, channels, emb, c.dropout, false, c.channels_per_head, Resample::Up));
      dec_takes_skip_.push_back(false);
      tap(fmt::format("dec.{}", dec_->size() - 1 - kMiddleBlocks));
    }
    for (int64_t i = 0; i <= c.blocks_per_level; ++i) {
      const int64_t out = C * c.channel_mult[static_cast<size_t>(level)];
      const int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      dec_->push_back(UNetBlock(channels + skip, out, emb, c.dropout, attends(res), c.channels_per_head, Resample::None));
      dec_takes_skip_.push_back(true);
      channels = out;
      tap(fmt::format("dec.{}", dec_->size() - 1 - kMiddleBlocks));
    }
  }
  norm_out_ = register_module("norm_out", torch::nn::GroupNorm(norm_groups(channels), channels));
  conv_out_ = register_module("conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, c.out_channels, 3).padding(1)));
}

at::Tensor UNetImpl::noise_features(const at::Tensor& c_noise) const {
  const int64_t half = config_.model_channels / 2;
  at::Tensor angles;
  if (fourier_frequencies_.defined()) {
    angles = torch::outer(c_noise.to(torch::kFloat32), fourier_frequencies_ * (2 * M_PI));
  } else {
    // DDPM++ positional embedding, endpoint=True: frequencies (1/10000)^(j/(half−1)).
    const auto j = torch::arange(half, c_noise.options().dtype(torch::kFloat32)) / static_cast<float>(std::max<int64_t>(half - 1, 1));
    angles = torch::outer(c_noise.to(torch::kFloat32), torch::pow(1e-4f, j));
  }
  return torch::cat({angles.cos(), angles.sin()}, 1);
}

at::Tensor UNetImpl::embed(const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target) {
  auto emb = noise_features(c_noise);
  if (map_label_) {
    emb = emb + map_label_->forward(class_embedding_input(labels, config_.num_classes) * std::sqrt(static_cast<double>(config_.num_classes)));
  }
  auto hidden = map_layer0_->forward(emb);
  if (map_target_) {
    DISTILLERY_CHECK(c_noise_target.defined(), Error("this network has a target-time input: the σ to jump to is required"));
    hidden = hidden + map_target_->forward(noise_features(c_noise_target));
  }
  return torch::silu(map_layer1_->forward(torch::silu(hidden)));
}

at::Tensor UNetImpl::run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                         const FeatureVisitor* visit) {
  size_t next_tap = 0;
  const auto ends_here = [&](const at::Tensor& features) { return visit && !(*visit)(taps_[next_tap++].name, features); };
  const auto emb = embed(c_noise, labels, c_noise_target);
  auto x = conv_in_->forward(x_in);
  std::vector<at::Tensor> skips = {x};
  if (ends_here(x)) return {};
  for (const auto& block : *enc_) {
    x = block->as<UNetBlockImpl>()->forward(x, emb);
    skips.push_back(x);
    if (ends_here(x)) return {};
  }
  for (size_t i = 0; i < kMiddleBlocks; ++i) x = (*dec_)[i]->as<UNetBlockImpl>()->forward(x, emb);
  if (ends_here(x)) return {};
  for (size_t i = kMiddleBlocks; i < dec_->size(); ++i) {
    if (dec_takes_skip_[i]) {
      x = torch::cat({x, skips.back()}, 1);
      skips.pop_back();
    }
    x = (*dec_)[i]->as<UNetBlockImpl>()->forward(x, emb);
    if (ends_here(x)) return {};
  }
  return conv_out_->forward(torch::silu(norm_out_->forward(x)));
}

at::Tensor UNetImpl::forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target) {
  return run(x_in, c_noise, labels, c_noise_target, nullptr);
}

void UNetImpl::features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                        const FeatureVisitor& visit) {
  run(x_in, c_noise, labels, c_noise_target, &visit);
}

}  // namespace distillery
