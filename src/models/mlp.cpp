#include "models/mlp.h"

#include <torch/nn/functional.h>
#include <torch/types.h>

#include <cmath>

#include "core/error.h"

namespace distillery {

MLPImpl::MLPImpl(MLPConfig config) : config_(config) {
  DISTILLERY_CHECK(config_.dim > 0 && config_.hidden > 0 && config_.layers >= 1 && config_.embedding > 0 && config_.embedding % 2 == 0,
                   Error("invalid MLP configuration").expected("dim, hidden > 0; layers ≥ 1; an even embedding size"));
  input_ = register_module("input", torch::nn::Linear(config_.dim, config_.hidden));
  noise_ = register_module("noise", torch::nn::Linear(config_.embedding, config_.hidden));
  if (config_.num_classes > 0) label_ = register_module("label", torch::nn::Linear(torch::nn::LinearOptions(config_.num_classes, config_.hidden).bias(false)));
  hidden_ = register_module("hidden", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.layers; ++i) hidden_->push_back(torch::nn::Linear(config_.hidden, config_.hidden));
  output_ = register_module("output", torch::nn::Linear(config_.hidden, config_.dim));
}

at::Tensor MLPImpl::forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels) {
  const int64_t half = config_.embedding / 2;
  const auto frequencies = torch::pow(1e-4f, torch::arange(half, torch::kFloat32) / static_cast<float>(std::max<int64_t>(half - 1, 1)));
  const auto angles = torch::outer(c_noise.to(x_in.scalar_type()), frequencies.to(x_in.scalar_type()));
  auto h = input_->forward(x_in.reshape({x_in.size(0), -1})) + noise_->forward(torch::cat({angles.cos(), angles.sin()}, 1));
  if (label_) {
    DISTILLERY_CHECK(labels.defined(), Error("this model is class-conditional: labels are required (use −1 for none)"));
    const auto one_hot = torch::nn::functional::one_hot(labels.clamp_min(0), config_.num_classes).to(x_in.scalar_type()) * labels.ge(0).unsqueeze(1);
    h = h + label_->forward(one_hot);
  }
  for (const auto& layer : *hidden_) h = h + layer->as<torch::nn::LinearImpl>()->forward(torch::silu(h));
  return output_->forward(torch::silu(h)).reshape(x_in.sizes());
}

}  // namespace distillery
