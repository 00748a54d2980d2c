#include "train/memory_estimate.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <algorithm>
#include <numeric>
#include <string>

#include "core/rng.h"
#include "models/keyed_dropout.h"
#include "models/network_denoiser.h"
#include "train/trainer.h"

namespace distillery {

namespace {

double parameter_bytes(const torch::nn::Module& module) {
  double bytes = 0;
  for (const auto& p : module.parameters()) bytes += static_cast<double>(p.numel()) * static_cast<double>(p.element_size());
  return bytes;
}

// Bytes allocated per row by one forward pass with autograd and the backward pass to the
// input (the weight gradients are counted with the optimisers).
double differentiated_bytes_per_row(NetworkDenoiser& generator, int64_t batch) {
  const int64_t probe = std::min<int64_t>(batch, 16);
  const auto options = generator.module().parameters().front().options();
  auto shape = generator.sample_shape();
  shape.insert(shape.begin(), probe);
  const auto x = torch::zeros(shape, options).requires_grad_(true);
  const auto sigma = torch::ones({probe}, options);
  const auto labels = generator.num_classes() > 0 ? torch::zeros({probe}, options.dtype(torch::kInt64)) : at::Tensor();
  // A network in training mode draws dropout masks, whose bytes count too; the probe's masks
  // are thrown away, so it may draw from the teacher's streams.
  std::vector<int64_t> positions(static_cast<size_t>(probe));
  std::iota(positions.begin(), positions.end(), int64_t{0});
  const DropoutKeys dropout_keys(0, noise_stream::teacher_dropout, positions);
  const auto bytes = allocated_bytes(options.device(), [&] {
    const auto denoised = generator.denoise(x, sigma, labels);
    torch::autograd::grad({denoised.square().sum()}, {x});
  });
  return static_cast<double>(bytes) / static_cast<double>(probe);
}

}  // namespace

std::vector<MemoryPart> training_memory(TrainingMethod& method, int64_t batch) {
  std::vector<MemoryPart> parts;
  double optimised = 0;
  std::vector<std::string> names;
  for (const auto& slot : method.optimizers()) {
    optimised += parameter_bytes(*slot.module);
    names.push_back(slot.name);
  }
  parts.push_back({fmt::format("gradients and optimiser state of {}: 3 × {}", fmt::join(names, ", "), human_bytes(optimised)), 3 * optimised});
  auto* const generator = method.generator();
  if (!generator) return parts;
  const double per_row = differentiated_bytes_per_row(*generator, batch);
  const double factor = method.activation_memory_factor();
  parts.push_back({fmt::format("activations: {} × {} row(s) × {} (allocated per row by a differentiated evaluation of the generator, measured)",
                               factor, batch, human_bytes(per_row)),
                   factor * static_cast<double>(batch) * per_row});
  return parts;
}

}  // namespace distillery
