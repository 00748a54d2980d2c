#include "models/mlp.h"

#include <fmt/format.h>
#include <torch/nn/functional.h>
#include <torch/types.h>

#include <cmath>
#include <functional>
#include <numeric>

#include "core/config.h"
#include "core/error.h"
#include "models/edm_layers.h"

namespace distillery {

int64_t MLPConfig::dim() const { return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>()); }

void add_mlp_fields(ConfigSchema& schema, const std::string& prefix) {
  const MLPConfig d;
  schema.add({prefix + "shape", ConfigType::IntList, "mlp: sample shape", fmt::format("[{}]", fmt::join(d.shape, ", "))}, NumberRange::between(1, 1 << 24));
  schema.add({prefix + "hidden", ConfigType::Int, "mlp: width of the hidden layers", std::to_string(d.hidden)}, NumberRange::between(1, 1 << 16));
  schema.add({prefix + "layers", ConfigType::Int, "mlp: residual hidden layers", std::to_string(d.layers)}, NumberRange::between(1, 1024));
  schema.add({prefix + "embedding", ConfigType::Int, "mlp: noise-embedding channels (even)", std::to_string(d.embedding)}, NumberRange::between(2, 1 << 16));
}

MLPConfig mlp_config_from(const Config& config, const std::string& prefix) {
  return {config.get_int_list(prefix + "shape"), config.get_int(prefix + "hidden"),         config.get_int(prefix + "layers"),
          config.get_int(prefix + "embedding"),  config.get_int(prefix + "num_classes"),    config.get_float(prefix + "label_dropout"),
          config.get_bool(prefix + "target_time")};
}

MLPImpl::MLPImpl(MLPConfig config) : config_(std::move(config)) {
  const bool shape_ok = !config_.shape.empty() && std::all_of(config_.shape.begin(), config_.shape.end(), [](int64_t n) { return n > 0; });
  DISTILLERY_CHECK(shape_ok && config_.hidden > 0 && config_.layers >= 1 && config_.embedding > 0 && config_.embedding % 2 == 0,
                   Error("invalid MLP configuration").field("model").expected("a non-empty positive shape; hidden > 0; layers ≥ 1; an even embedding size"));
  input_ = register_module("input", torch::nn::Linear(config_.dim(), config_.hidden));
  noise_ = register_module("noise", torch::nn::Linear(config_.embedding, config_.hidden));
  if (config_.target_time) {
    target_noise_ = register_module("target_noise", torch::nn::Linear(config_.embedding, config_.hidden));
    torch::NoGradGuard no_grad;
    target_noise_->weight.zero_();
    target_noise_->bias.zero_();
  }
  if (config_.num_classes > 0) label_ = register_module("label", torch::nn::Linear(torch::nn::LinearOptions(config_.num_classes, config_.hidden).bias(false)));
  hidden_ = register_module("hidden", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.layers; ++i) hidden_->push_back(torch::nn::Linear(config_.hidden, config_.hidden));
  for (int64_t k = 0; k <= config_.layers; ++k) taps_.push_back({fmt::format("layer.{}", k), {config_.hidden}});
  output_ = register_module("output", torch::nn::Linear(config_.hidden, config_.dim()));
}

at::Tensor MLPImpl::run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                        const FeatureVisitor* visit) {
  size_t next_tap = 0;
  const auto ends_here = [&](const at::Tensor& features) { return visit && !(*visit)(taps_[next_tap++].name, features); };
  const int64_t half = config_.embedding / 2;
  const auto frequencies = torch::pow(1e-4f, torch::arange(half, x_in.options().dtype(torch::kFloat32)) / static_cast<float>(std::max<int64_t>(half - 1, 1)));
  const auto noise_features = [&](const at::Tensor& c) {
    const auto angles = torch::outer(c.to(x_in.scalar_type()), frequencies.to(x_in.scalar_type()));
    return torch::cat({angles.cos(), angles.sin()}, 1);
  };
  auto h = input_->forward(x_in.reshape({x_in.size(0), -1})) + noise_->forward(noise_features(c_noise));
  if (target_noise_) {
    DISTILLERY_CHECK(c_noise_target.defined(), Error("this network has a target-time input: the σ to jump to is required"));
    h = h + target_noise_->forward(noise_features(c_noise_target));
  }
  if (label_) {
    h = h + label_->forward(class_embedding_input(labels, config_.num_classes, x_in.scalar_type()));
  }
  if (ends_here(h)) return {};
  for (const auto& layer : *hidden_) {
    h = h + layer->as<torch::nn::LinearImpl>()->forward(torch::silu(h));
    if (ends_here(h)) return {};
  }
  return output_->forward(torch::silu(h)).reshape(x_in.sizes());
}

at::Tensor MLPImpl::forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target) {
  return run(x_in, c_noise, labels, c_noise_target, nullptr);
}

void MLPImpl::features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                       const FeatureVisitor& visit) {
  run(x_in, c_noise, labels, c_noise_target, &visit);
}

}  // namespace distillery
