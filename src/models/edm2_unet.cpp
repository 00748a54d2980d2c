#include "models/edm2_unet.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "models/keyed_dropout.h"
#include "kernels/attention.h"
#include "models/edm_layers.h"

namespace distillery {

namespace F = torch::nn::functional;

namespace {

// x over `dims` scaled to unit root-mean-square magnitude (EDM2's normalize, eps 1e-4).
at::Tensor normalized(const at::Tensor& x, at::IntArrayRef dims) {
  auto norm = at::linalg_vector_norm(x, 2, dims, true, torch::kFloat32);
  norm = norm * std::sqrt(static_cast<double>(norm.numel()) / static_cast<double>(x.numel())) + 1e-4;
  return x / norm.to(x.scalar_type());
}
at::Tensor normalized(const at::Tensor& x) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  return normalized(x, dims);
}

at::Tensor mp_silu(const at::Tensor& x) { return torch::silu(x) / 0.596; }

at::Tensor mp_sum(const at::Tensor& a, const at::Tensor& b, double t) { return a.lerp(b, t) / std::sqrt((1 - t) * (1 - t) + t * t); }

at::Tensor mp_cat(const at::Tensor& a, const at::Tensor& b, double t) {
  const double na = static_cast<double>(a.size(1)), nb = static_cast<double>(b.size(1));
  const double c = std::sqrt((na + nb) / ((1 - t) * (1 - t) + t * t));
  return torch::cat({a * (c / std::sqrt(na) * (1 - t)), b * (c / std::sqrt(nb) * t)}, 1);
}

// 2× resampling by the box filter [1, 1], depthwise.
at::Tensor resampled(const at::Tensor& x, const std::string& mode) {
  if (mode == "keep") return x;
  const int64_t c = x.size(1);
  const auto f = torch::full({c, 1, 2, 2}, 0.25, x.options());
  if (mode == "down") return F::conv2d(x, f, F::Conv2dFuncOptions().groups(c).stride(2));
  return F::conv_transpose2d(x, f * 4, F::ConvTranspose2dFuncOptions().groups(c).stride(2));
}

// A convolution (or, without a kernel, a fully connected layer) whose weight is normalised in
// every pass and scaled to preserve magnitude; training also writes the normalised weight back.
struct MPConvImpl : torch::nn::Module {
  MPConvImpl(int64_t in, int64_t out, int64_t kernel) {
    weight = register_parameter("weight", kernel > 0 ? torch::randn({out, in, kernel, kernel}) : torch::randn({out, in}));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& gain = {}) {
    auto w = weight.to(torch::kFloat32);
    if (is_training()) {
      torch::NoGradGuard no_grad;
      weight.copy_(normalized(w));
    }
    w = normalized(w) * (1.0 / std::sqrt(static_cast<double>(w[0].numel())));
    if (gain.defined()) w = w * gain;
    w = w.to(x.scalar_type());
    if (w.dim() == 2) return torch::matmul(x, w.t());
    return F::conv2d(x, w, F::Conv2dFuncOptions().padding(w.size(-1) / 2));
  }
  at::Tensor weight;
};
TORCH_MODULE(MPConv);

struct MPFourierImpl : torch::nn::Module {
  explicit MPFourierImpl(int64_t channels) {
    freqs = register_buffer("freqs", 2 * M_PI * torch::randn({channels}));
    phases = register_buffer("phases", 2 * M_PI * torch::rand({channels}));
  }
  at::Tensor forward(const at::Tensor& x) {
    return ((torch::outer(x.to(torch::kFloat32), freqs.to(torch::kFloat32)) + phases.to(torch::kFloat32)).cos() * std::sqrt(2.0)).to(x.scalar_type());
  }
  at::Tensor freqs, phases;
};
TORCH_MODULE(MPFourier);

struct Edm2BlockImpl : torch::nn::Module {
  Edm2BlockImpl(int64_t in, int64_t out, int64_t emb_channels, bool encoder, std::string resample, bool attention, const Edm2UNetConfig& c)
      : out_channels(out), encoder(encoder), resample(std::move(resample)), num_heads(attention ? out / c.channels_per_head : 0), dropout(c.dropout),
        res_balance(c.res_balance), attn_balance(c.attn_balance), clip_act(c.clip_act) {
    emb_gain = register_parameter("emb_gain", torch::zeros({}));
    conv_res0 = register_module("conv_res0", MPConv(encoder ? out : in, out, 3));
    emb_linear = register_module("emb_linear", MPConv(emb_channels, out, 0));
    conv_res1 = register_module("conv_res1", MPConv(out, out, 3));
    if (in != out) conv_skip = register_module("conv_skip", MPConv(in, out, 1));
    if (num_heads > 0) {
      attn_qkv = register_module("attn_qkv", MPConv(out, out * 3, 1));
      attn_proj = register_module("attn_proj", MPConv(out, out, 1));
    }
  }

  at::Tensor forward(const at::Tensor& input, const at::Tensor& emb) {
    auto x = resampled(input, resample);
    if (encoder) {
      if (conv_skip) x = conv_skip->forward(x);
      x = normalized(x, {1});  // pixel norm
    }
    auto y = conv_res0->forward(mp_silu(x));
    const auto c = emb_linear->forward(emb, emb_gain) + 1;
    y = mp_silu(y * c.unsqueeze(2).unsqueeze(3).to(y.scalar_type()));
    y = conv_res1->forward(keyed_dropout(y, dropout, is_training()));
    if (!encoder && conv_skip) x = conv_skip->forward(x);
    x = mp_sum(x, y, res_balance);
    if (num_heads > 0) {
      const int64_t n = x.size(0), tokens = x.size(2) * x.size(3);
      // [N, heads, channels, (q, k, v), tokens], each of q, k and v pixel-normed over its channels.
      const auto qkv = normalized(attn_qkv->forward(x).reshape({n, num_heads, -1, 3, tokens}), {2}).permute({3, 0, 1, 4, 2}).unbind(0);
      const auto a = attention(qkv[0], qkv[1], qkv[2]).transpose(2, 3).reshape(x.sizes());
      x = mp_sum(x, attn_proj->forward(a), attn_balance);
    }
    return clip_act > 0 ? x.clamp(-clip_act, clip_act) : x;
  }

  int64_t out_channels;
  bool encoder;
  std::string resample;
  int64_t num_heads;
  double dropout, res_balance, attn_balance, clip_act;
  at::Tensor emb_gain;
  MPConv conv_res0{nullptr}, emb_linear{nullptr}, conv_res1{nullptr}, conv_skip{nullptr}, attn_qkv{nullptr}, attn_proj{nullptr};
};
TORCH_MODULE(Edm2Block);

}  // namespace

void add_edm2_unet_fields(ConfigSchema& schema, const std::string& prefix) {
  const Edm2UNetConfig d;
  const auto number = [](double v) { return fmt::format("{}", v); };
  schema.add({prefix + "label_balance", ConfigType::Float, "edm2_unet: balance of the noise (0) and class (1) embeddings", number(d.label_balance)},
             NumberRange::between(0, 1));
  schema.add({prefix + "concat_balance", ConfigType::Float, "edm2_unet: balance of skip connections (0) and the main path (1)", number(d.concat_balance)},
             NumberRange::between(0, 1));
  schema.add({prefix + "res_balance", ConfigType::Float, "edm2_unet: balance of a block's main (0) and residual (1) branches", number(d.res_balance)},
             NumberRange::between(0, 1));
  schema.add({prefix + "attn_balance", ConfigType::Float, "edm2_unet: balance of the main branch (0) and self-attention (1)", number(d.attn_balance)},
             NumberRange::between(0, 1));
  schema.add({prefix + "clip_act", ConfigType::Float, "edm2_unet: clip block outputs to ±this (0: no clipping)", number(d.clip_act)}, NumberRange::at_least(0));
  schema.add({prefix + "logvar_channels", ConfigType::Int, "edm2_unet: width of the uncertainty head", std::to_string(d.logvar_channels)},
             NumberRange::between(1, 65536));
}

Edm2UNetConfig edm2_unet_config_from(const Config& config, const std::string& prefix) {
  Edm2UNetConfig c;
  const auto set_or = [&](const std::string& key, int64_t fallback) { return config.is_set(prefix + key) ? config.get_int(prefix + key) : fallback; };
  c.channels = config.get_int(prefix + "in_channels");
  c.resolution = config.get_int(prefix + "resolution");
  c.model_channels = config.get_int(prefix + "model_channels");
  c.channel_mult = config.get_int_list(prefix + "channel_mult");
  c.channel_mult_noise = set_or("channel_mult_noise", 0);
  c.channel_mult_emb = set_or("channel_mult_emb", 0);
  c.blocks_per_level = config.get_int(prefix + "blocks_per_level");
  c.attn_resolutions = config.get_int_list(prefix + "attn_resolutions");
  c.channels_per_head = set_or("channels_per_head", Edm2UNetConfig{}.channels_per_head);
  c.dropout = config.get_float(prefix + "dropout");
  c.num_classes = config.get_int(prefix + "num_classes");
  c.label_dropout = config.get_float(prefix + "label_dropout");
  c.label_balance = config.get_float(prefix + "label_balance");
  c.concat_balance = config.get_float(prefix + "concat_balance");
  c.res_balance = config.get_float(prefix + "res_balance");
  c.attn_balance = config.get_float(prefix + "attn_balance");
  c.clip_act = config.get_float(prefix + "clip_act");
  c.logvar_channels = config.get_int(prefix + "logvar_channels");
  return c;
}

Edm2UNetConfig resolved(Edm2UNetConfig c) {
  DISTILLERY_CHECK(!c.channel_mult.empty(), Error("an empty channel_mult").field("model.channel_mult"));
  if (c.channel_mult_noise == 0) c.channel_mult_noise = c.channel_mult[0];
  if (c.channel_mult_emb == 0) c.channel_mult_emb = *std::max_element(c.channel_mult.begin(), c.channel_mult.end());
  return c;
}

std::string edm2_unet_config_json(const Edm2UNetConfig& config) {
  const auto c = resolved(config);
  return nlohmann::json{{"kind", "edm2_unet"},
                        {"in_channels", c.channels},
                        {"resolution", c.resolution},
                        {"model_channels", c.model_channels},
                        {"channel_mult", c.channel_mult},
                        {"channel_mult_noise", c.channel_mult_noise},
                        {"channel_mult_emb", c.channel_mult_emb},
                        {"blocks_per_level", c.blocks_per_level},
                        {"attn_resolutions", c.attn_resolutions},
                        {"channels_per_head", c.channels_per_head},
                        {"dropout", c.dropout},
                        {"num_classes", c.num_classes},
                        {"label_dropout", c.label_dropout},
                        {"label_balance", c.label_balance},
                        {"concat_balance", c.concat_balance},
                        {"res_balance", c.res_balance},
                        {"attn_balance", c.attn_balance},
                        {"clip_act", c.clip_act},
                        {"logvar_channels", c.logvar_channels}}
      .dump();
}

Edm2UNetImpl::Edm2UNetImpl(Edm2UNetConfig config) : config_(resolved(std::move(config))) {
  const auto& c = config_;
  const int64_t levels = static_cast<int64_t>(c.channel_mult.size());
  DISTILLERY_CHECK(c.resolution % (int64_t{1} << (levels - 1)) == 0,
                   Error(fmt::format("resolution {} cannot be halved {} times", c.resolution, levels - 1)).field("model.resolution"));
  const int64_t cnoise = c.model_channels * c.channel_mult_noise, cemb = c.model_channels * c.channel_mult_emb;

  out_gain_ = register_parameter("out_gain", torch::zeros({}));
  emb_fourier_ = register_module("emb_fourier", MPFourier(cnoise).ptr());
  emb_noise_ = register_module("emb_noise", MPConv(cnoise, cemb, 0).ptr());
  if (c.num_classes > 0) emb_label_ = register_module("emb_label", MPConv(c.num_classes, cemb, 0).ptr());
  enc_ = register_module("enc", torch::nn::ModuleDict());
  dec_ = register_module("dec", torch::nn::ModuleDict());
  const auto attends = [&](int64_t res) { return std::find(c.attn_resolutions.begin(), c.attn_resolutions.end(), res) != c.attn_resolutions.end(); };
  const auto add = [&](torch::nn::ModuleDict& dict, const std::string& name, std::shared_ptr<torch::nn::Module> module, int64_t channels, int64_t res) {
    dict->update({{name, std::move(module)}});
    taps_.push_back({fmt::format("{}.{}", &dict == &enc_ ? "enc" : "dec", name), {channels, res, res}});
  };
  std::vector<int64_t> skips;
  int64_t cout = c.channels + 1;  // the input with a constant channel of ones
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t res = c.resolution >> level, channels = c.model_channels * c.channel_mult[static_cast<size_t>(level)];
    const auto prefix = fmt::format("{}x{}_", res, res);
    if (level == 0) {
      const int64_t cin = cout;
      cout = channels;
      add(enc_, prefix + "conv", MPConv(cin, cout, 3).ptr(), cout, res);
    } else {
      add(enc_, prefix + "down", Edm2Block(cout, cout, cemb, true, "down", false, c).ptr(), cout, res);
    }
    skips.push_back(cout);
    for (int64_t i = 0; i < c.blocks_per_level; ++i) {
      const int64_t cin = cout;
      cout = channels;
      add(enc_, fmt::format("{}block{}", prefix, i), Edm2Block(cin, cout, cemb, true, "keep", attends(res), c).ptr(), cout, res);
      skips.push_back(cout);
    }
  }
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t res = c.resolution >> level, channels = c.model_channels * c.channel_mult[static_cast<size_t>(level)];
    const auto prefix = fmt::format("{}x{}_", res, res);
    if (level == levels - 1) {
      add(dec_, prefix + "in0", Edm2Block(cout, cout, cemb, false, "keep", true, c).ptr(), cout, res);
      add(dec_, prefix + "in1", Edm2Block(cout, cout, cemb, false, "keep", false, c).ptr(), cout, res);
    } else {
      add(dec_, prefix + "up", Edm2Block(cout, cout, cemb, false, "up", false, c).ptr(), cout, res);
    }
    for (int64_t i = 0; i <= c.blocks_per_level; ++i) {
      const int64_t cin = cout + skips.back();
      skips.pop_back();
      cout = channels;
      add(dec_, fmt::format("{}block{}", prefix, i), Edm2Block(cin, cout, cemb, false, "keep", attends(res), c).ptr(), cout, res);
    }
  }
  out_conv_ = register_module("out_conv", MPConv(cout, c.channels, 3).ptr());
  // EDM2's uncertainty u(σ): read by its loss only, kept so that its state dicts move both ways.
  register_module("logvar_fourier", MPFourier(c.logvar_channels));
  register_module("logvar_linear", MPConv(c.logvar_channels, 1, 0));
}

at::Tensor Edm2UNetImpl::run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit) {
  size_t next_tap = 0;
  const auto ends_here = [&](const at::Tensor& features) { return visit && !(*visit)(taps_[next_tap++].name, features); };
  auto emb = emb_noise_->as<MPConvImpl>()->forward(emb_fourier_->as<MPFourierImpl>()->forward(c_noise.to(torch::kFloat32)));
  if (emb_label_) {
    const auto one_hot = class_embedding_input(labels, config_.num_classes);
    emb = mp_sum(emb, emb_label_->as<MPConvImpl>()->forward(one_hot * std::sqrt(static_cast<double>(config_.num_classes))), config_.label_balance);
  }
  emb = mp_silu(emb);
  auto x = torch::cat({x_in, torch::ones_like(x_in.narrow(1, 0, 1))}, 1);
  std::vector<at::Tensor> skips;
  for (const auto& item : *enc_) {
    auto* block = item.value()->as<Edm2BlockImpl>();
    x = block ? block->forward(x, emb) : item.value()->as<MPConvImpl>()->forward(x);
    skips.push_back(x);
    if (ends_here(x)) return {};
  }
  for (const auto& item : *dec_) {
    if (item.key().find("block") != std::string::npos) {
      x = mp_cat(x, skips.back(), config_.concat_balance);
      skips.pop_back();
    }
    x = item.value()->as<Edm2BlockImpl>()->forward(x, emb);
    if (ends_here(x)) return {};
  }
  return out_conv_->as<MPConvImpl>()->forward(x, out_gain_);
}

at::Tensor Edm2UNetImpl::forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels) { return run(x_in, c_noise, labels, nullptr); }

void Edm2UNetImpl::features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit) {
  run(x_in, c_noise, labels, &visit);
}

}  // namespace distillery
