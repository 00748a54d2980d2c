#include "models/dit.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "kernels/attention.h"

namespace distillery {

namespace F = torch::nn::functional;

namespace {

constexpr int64_t kFrequencyChannels = 256;  // DiT's frequency_embedding_size

at::Tensor layer_norm(const at::Tensor& x) { return F::layer_norm(x, F::LayerNormFuncOptions({x.size(-1)}).eps(1e-6)); }

// adaLN: the normalised tokens [N, T, D] scaled and shifted per sample by [N, D] rows.
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return torch::addcmul(shift.unsqueeze(1), x, scale.unsqueeze(1) + 1);
}

// SiLU then a linear layer to `chunks`·D, as DiT's adaLN_modulation (a Sequential, so the
// linear layer is named "1").
torch::nn::Sequential modulation(int64_t hidden, int64_t chunks) { return torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(hidden, chunks * hidden)); }

// Angles t·10000^(−j/half), cos then sin, in float32 as DiT computes them: its timesteps reach
// 999, where any other rounding of the frequencies moves the angles by 1e-4.
at::Tensor timestep_frequencies(const at::Tensor& t) {
  const int64_t half = kFrequencyChannels / 2;
  const auto freqs = torch::exp(torch::arange(half, t.options().dtype(torch::kFloat32)) * (-std::log(10000.0) / half));
  const auto angles = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  return torch::cat({angles.cos(), angles.sin()}, 1);
}

// DiT's fixed positions (MAE's 2-D sin-cos): token (row i, column j) gets sin and cos of
// j·ω_k, then of i·ω_k, ω_k = 10000^(−k/(D/4)), computed in float64 and stored in float32.
at::Tensor sincos_positions(int64_t grid, int64_t hidden) {
  DISTILLERY_CHECK(hidden % 4 == 0, Error(fmt::format("DiT's 2-D positions need hidden_size divisible by 4, got {}", hidden)).field("model.hidden_size"));
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t quarter = hidden / 4;
  const auto omega = torch::pow(10000.0, -torch::arange(quarter, opts) / static_cast<double>(quarter));
  const auto index = torch::arange(grid, opts);
  const auto column = index.repeat({grid}), row = index.repeat_interleave(grid);
  const auto half = [&](const at::Tensor& position) {
    const auto angles = torch::outer(position, omega);
    return torch::cat({angles.sin(), angles.cos()}, 1);
  };
  return torch::cat({half(column), half(row)}, 1).to(torch::kFloat32).unsqueeze(0);
}

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t hidden, int64_t heads) : num_heads(heads) {
    qkv = register_module("qkv", torch::nn::Linear(hidden, 3 * hidden));
    proj = register_module("proj", torch::nn::Linear(hidden, hidden));
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t n = x.size(0), tokens = x.size(1), hidden = x.size(2);
    const auto parts = qkv->forward(x).reshape({n, tokens, 3, num_heads, hidden / num_heads}).permute({2, 0, 3, 1, 4}).unbind(0);
    return proj->forward(attention(parts[0], parts[1], parts[2]).transpose(1, 2).reshape({n, tokens, hidden}));
  }
  int64_t num_heads;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(Attention);

struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t hidden, int64_t inner) {
    fc1 = register_module("fc1", torch::nn::Linear(hidden, inner));
    fc2 = register_module("fc2", torch::nn::Linear(inner, hidden));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2->forward(torch::gelu(fc1->forward(x), "tanh")); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

struct DitBlockImpl : torch::nn::Module {
  DitBlockImpl(int64_t hidden, int64_t heads, double mlp_ratio) {
    attn = register_module("attn", Attention(hidden, heads));
    mlp = register_module("mlp", Mlp(hidden, static_cast<int64_t>(static_cast<double>(hidden) * mlp_ratio)));
    adaLN_modulation = register_module("adaLN_modulation", modulation(hidden, 6));
  }
  at::Tensor forward(const at::Tensor& input, const at::Tensor& c) {
    // shift, scale and gate of the attention branch, then of the MLP branch.
    const auto m = adaLN_modulation->forward(c).chunk(6, 1);
    auto x = input + m[2].unsqueeze(1) * attn->forward(modulate(layer_norm(input), m[0], m[1]));
    return x + m[5].unsqueeze(1) * mlp->forward(modulate(layer_norm(x), m[3], m[4]));
  }
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};
};
TORCH_MODULE(DitBlock);

struct FinalLayerImpl : torch::nn::Module {
  FinalLayerImpl(int64_t hidden, int64_t outputs) {
    linear = register_module("linear", torch::nn::Linear(hidden, outputs));
    adaLN_modulation = register_module("adaLN_modulation", modulation(hidden, 2));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c) {
    const auto shift_scale = adaLN_modulation->forward(c).chunk(2, 1);
    return linear->forward(modulate(layer_norm(x), shift_scale[0], shift_scale[1]));
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};
};
TORCH_MODULE(FinalLayer);

struct PatchEmbedImpl : torch::nn::Module {
  PatchEmbedImpl(int64_t channels, int64_t hidden, int64_t patch) {
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, hidden, patch).stride(patch)));
  }
  at::Tensor forward(const at::Tensor& x) { return proj->forward(x).flatten(2).transpose(1, 2); }  // [N, T, D]
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

struct TimestepEmbedderImpl : torch::nn::Module {
  explicit TimestepEmbedderImpl(int64_t hidden) {
    mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(kFrequencyChannels, hidden), torch::nn::SiLU(), torch::nn::Linear(hidden, hidden)));
  }
  at::Tensor forward(const at::Tensor& t) { return mlp->forward(timestep_frequencies(t)); }
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(TimestepEmbedder);

struct LabelEmbedderImpl : torch::nn::Module {
  LabelEmbedderImpl(int64_t classes, int64_t hidden, bool null_class) : num_classes(classes), has_null_class(null_class) {
    embedding_table = register_module("embedding_table", torch::nn::Embedding(classes + (null_class ? 1 : 0), hidden));
  }
  // Labels −1 (a training step's label dropout among them) become the null class.
  at::Tensor forward(const at::Tensor& labels) {
    DISTILLERY_CHECK(labels.defined(), Error("this DiT is class-conditional: labels are required (use −1 for the null class)"));
    const auto dropped = labels.lt(0);
    DISTILLERY_CHECK(has_null_class || !dropped.any().item<bool>(),
                     Error("this DiT has no null class (it was built with model.label_dropout 0): label −1 cannot be embedded")
                         .expected(fmt::format("labels in [0, {})", num_classes)));
    return embedding_table->forward(torch::where(dropped, num_classes, labels));
  }
  int64_t num_classes;
  bool has_null_class;
  torch::nn::Embedding embedding_table{nullptr};
};
TORCH_MODULE(LabelEmbedder);

}  // namespace

void add_dit_fields(ConfigSchema& schema, const std::string& prefix) {
  const DitConfig d;
  schema.add({prefix + "patch_size", ConfigType::Int, "dit: patch height = width", std::to_string(d.patch_size)}, NumberRange::between(1, 1024));
  schema.add({prefix + "hidden_size", ConfigType::Int, "dit: token width", std::to_string(d.hidden_size)}, NumberRange::between(4, 65536));
  schema.add({prefix + "depth", ConfigType::Int, "dit: transformer blocks", std::to_string(d.depth)}, NumberRange::between(1, 1024));
  schema.add({prefix + "num_heads", ConfigType::Int, "dit: attention heads", std::to_string(d.num_heads)}, NumberRange::between(1, 1024));
  schema.add({prefix + "mlp_ratio", ConfigType::Float, "dit: MLP width per token width", fmt::format("{}", d.mlp_ratio)}, NumberRange::above(0));
  schema.add({prefix + "learn_sigma", ConfigType::Bool, "dit: a second output half for the learned DDPM variance (ignored by ODE sampling)",
              d.learn_sigma ? "true" : "false"});
}

DitConfig dit_config_from(const Config& config, const std::string& prefix) {
  DitConfig c;
  if (config.is_set(prefix + "in_channels")) c.in_channels = config.get_int(prefix + "in_channels");
  if (config.is_set(prefix + "resolution")) c.resolution = config.get_int(prefix + "resolution");
  c.patch_size = config.get_int(prefix + "patch_size");
  c.hidden_size = config.get_int(prefix + "hidden_size");
  c.depth = config.get_int(prefix + "depth");
  c.num_heads = config.get_int(prefix + "num_heads");
  c.mlp_ratio = config.get_float(prefix + "mlp_ratio");
  c.num_classes = config.get_int(prefix + "num_classes");
  c.label_dropout = config.get_float(prefix + "label_dropout");
  c.learn_sigma = config.get_bool(prefix + "learn_sigma");
  return c;
}

std::string dit_config_json(const DitConfig& c) {
  return nlohmann::json{{"kind", "dit"},
                        {"in_channels", c.in_channels},
                        {"resolution", c.resolution},
                        {"patch_size", c.patch_size},
                        {"hidden_size", c.hidden_size},
                        {"depth", c.depth},
                        {"num_heads", c.num_heads},
                        {"mlp_ratio", c.mlp_ratio},
                        {"num_classes", c.num_classes},
                        {"label_dropout", c.label_dropout},
                        {"learn_sigma", c.learn_sigma}}
      .dump();
}

DitImpl::DitImpl(DitConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  DISTILLERY_CHECK(c.resolution % c.patch_size == 0,
                   Error(fmt::format("resolution {} is not a whole number of {}×{} patches", c.resolution, c.patch_size, c.patch_size)).field("model.patch_size"));
  DISTILLERY_CHECK(c.hidden_size % c.num_heads == 0,
                   Error(fmt::format("hidden_size {} does not split into {} heads", c.hidden_size, c.num_heads)).field("model.num_heads"));
  const int64_t grid = c.resolution / c.patch_size, out_channels = c.learn_sigma ? 2 * c.in_channels : c.in_channels;
  x_embedder_ = register_module("x_embedder", PatchEmbed(c.in_channels, c.hidden_size, c.patch_size).ptr());
  t_embedder_ = register_module("t_embedder", TimestepEmbedder(c.hidden_size).ptr());
  if (c.num_classes > 0) y_embedder_ = register_module("y_embedder", LabelEmbedder(c.num_classes, c.hidden_size, c.label_dropout > 0).ptr());
  // Fixed, not trained, yet part of DiT's state dict.
  pos_embed_ = register_buffer("pos_embed", sincos_positions(grid, c.hidden_size));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) {
    blocks_->push_back(DitBlock(c.hidden_size, c.num_heads, c.mlp_ratio));
    taps_.push_back({fmt::format("blocks.{}", i), {c.hidden_size, grid, grid}});
  }
  final_layer_ = register_module("final_layer", FinalLayer(c.hidden_size, c.patch_size * c.patch_size * out_channels).ptr());
  initialize();
}

// DiT's initialisation: Xavier-uniform linear layers (the patch projection as one) with zero
// biases, N(0, 0.02²) label and timestep embeddings, and zero modulation and output layers, so
// that every block starts as the identity and the network as zero (adaLN-Zero).
void DitImpl::initialize() {
  torch::NoGradGuard no_grad;
  for (auto& module : modules(false)) {
    if (auto* linear = module->as<torch::nn::LinearImpl>()) {
      torch::nn::init::xavier_uniform_(linear->weight);
      torch::nn::init::zeros_(linear->bias);
    }
  }
  auto& proj = x_embedder_->as<PatchEmbedImpl>()->proj;
  torch::nn::init::xavier_uniform_(proj->weight.view({proj->weight.size(0), -1}));
  torch::nn::init::zeros_(proj->bias);
  if (y_embedder_) torch::nn::init::normal_(y_embedder_->as<LabelEmbedderImpl>()->embedding_table->weight, 0, 0.02);
  for (const auto& layer : t_embedder_->as<TimestepEmbedderImpl>()->mlp->children())
    if (auto* linear = layer->as<torch::nn::LinearImpl>()) torch::nn::init::normal_(linear->weight, 0, 0.02);
  const auto zero = [](torch::nn::LinearImpl* linear) {
    torch::nn::init::zeros_(linear->weight);
    torch::nn::init::zeros_(linear->bias);
  };
  for (const auto& block : *blocks_) zero(block->as<DitBlockImpl>()->adaLN_modulation[1]->as<torch::nn::LinearImpl>());
  auto* final_layer = final_layer_->as<FinalLayerImpl>();
  zero(final_layer->adaLN_modulation[1]->as<torch::nn::LinearImpl>());
  zero(final_layer->linear.get());
}

at::Tensor DitImpl::conditioning(const at::Tensor& c_noise, const at::Tensor& labels) {
  auto c = t_embedder_->as<TimestepEmbedderImpl>()->forward(c_noise);
  if (y_embedder_) c = c + y_embedder_->as<LabelEmbedderImpl>()->forward(labels);
  return c;
}

at::Tensor DitImpl::run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit) {
  const int64_t n = x_in.size(0), p = config_.patch_size, grid = config_.resolution / p, hidden = config_.hidden_size;
  DISTILLERY_CHECK(x_in.dim() == 4 && x_in.size(1) == config_.in_channels && x_in.size(2) == config_.resolution && x_in.size(3) == config_.resolution,
                   Error("DiT input has the wrong shape")
                       .expected(fmt::format("[N, {}, {}, {}]", config_.in_channels, config_.resolution, config_.resolution))
                       .got(fmt::format("[{}]", fmt::join(x_in.sizes(), ", "))));
  const auto c = conditioning(c_noise, labels);
  auto x = x_embedder_->as<PatchEmbedImpl>()->forward(x_in) + pos_embed_.to(x_in.scalar_type());
  for (size_t i = 0; i < blocks_->size(); ++i) {
    x = blocks_[i]->as<DitBlockImpl>()->forward(x, c);
    if (visit && !(*visit)(taps_[i].name, x.transpose(1, 2).reshape({n, hidden, grid, grid}))) return {};
  }
  x = final_layer_->as<FinalLayerImpl>()->forward(x, c);
  // Each token's p·p·C outputs, laid out [row in patch][column in patch][channel], back to an image.
  const int64_t out_channels = x.size(2) / (p * p);
  return x.reshape({n, grid, grid, p, p, out_channels}).permute({0, 5, 1, 3, 2, 4}).reshape({n, out_channels, grid * p, grid * p});
}

at::Tensor DitImpl::forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels) { return run(x_in, c_noise, labels, nullptr); }

void DitImpl::features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit) {
  run(x_in, c_noise, labels, &visit);
}

}  // namespace distillery
