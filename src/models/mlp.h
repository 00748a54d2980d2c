// defines: MLPConfig, MLPImpl, MLP
// An MLP denoiser network for low-dimensional data (2-D mixtures and other toys): the flat
// input and a positional embedding of c_noise (plus a label embedding when conditional) feed
// residual SiLU layers. Used with preconditioning like any network.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

namespace distillery {

struct MLPConfig {
  int64_t dim = 2;               // flat sample dimension
  int64_t hidden = 128;          // width of the hidden layers
  int64_t layers = 3;            // residual hidden layers
  int64_t embedding = 32;        // noise-embedding channels (even)
  int64_t num_classes = 0;       // 0: unconditional
};

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(MLPConfig config);
  // x_in: [N, *shape] with prod(shape) = dim; c_noise: [N]; labels: [N] (−1 = none) or undefined.
  at::Tensor forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels);
  const MLPConfig& config() const { return config_; }

 private:
  MLPConfig config_;
  torch::nn::Linear input_{nullptr}, noise_{nullptr}, label_{nullptr}, output_{nullptr};
  torch::nn::ModuleList hidden_{nullptr};
};
TORCH_MODULE(MLP);

}  // namespace distillery
