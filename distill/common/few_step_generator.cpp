#include "distill/common/few_step_generator.h"

#include <fmt/format.h>
#include <torch/types.h>

#include "core/error.h"
#include "core/rng.h"
#include "distill/common/sigma_sampling.h"
#include "models/network_denoiser.h"

namespace distillery {

FewStepGenerator::FewStepGenerator(NetworkDenoiser& network, std::vector<double> sigmas, GeneratorStreams streams, std::vector<int64_t> classes)
    : network_(network), sigmas_(std::move(sigmas)), streams_(streams), classes_(std::move(classes)) {
  if (classes_.empty())
    for (int64_t c = 0; c < network_.num_classes(); ++c) classes_.push_back(c);
  for (const auto c : classes_)
    DISTILLERY_CHECK(c >= 0 && c < network_.num_classes(), Error("a few-step student's class is not one of its network's").field("student.classes")
                                                               .expected(fmt::format("0..{}", network_.num_classes() - 1)).got(std::to_string(c)));
  DISTILLERY_CHECK(!sigmas_.empty() && sigmas_.size() <= 100,
                   Error("a few-step student takes 1 to 100 steps (its backward simulation's noise streams)").field("student.sigmas")
                       .got(std::to_string(sigmas_.size())));
  for (size_t i = 0; i < sigmas_.size(); ++i)
    DISTILLERY_CHECK(sigmas_[i] > 0 && (i == 0 || sigmas_[i] < sigmas_[i - 1]),
                     Error("student.sigmas must be positive and strictly decreasing").field("student.sigmas").got(std::to_string(sigmas_[i])));
}

at::Tensor FewStepGenerator::labels(const std::vector<int64_t>& positions) const {
  if (classes_.empty()) return {};
  const auto count = static_cast<int64_t>(classes_.size());
  std::vector<int64_t> values;
  for (const auto p : positions) values.push_back(classes_[static_cast<size_t>(p % count)]);
  return torch::tensor(values, torch::kInt64).to(network_.device());
}

std::pair<at::Tensor, at::Tensor> FewStepGenerator::generate(uint64_t seed, const std::vector<int64_t>& positions) const {
  const int64_t n = static_cast<int64_t>(positions.size()), steps = static_cast<int64_t>(sigmas_.size());
  const auto device = network_.device();
  const auto options = torch::TensorOptions(torch::kFloat32).device(device);
  const auto& shape = network_.sample_shape();
  const auto labels = this->labels(positions);
  std::vector<int64_t> per_row(shape.size() + 1, 1);
  per_row[0] = -1;
  auto x = per_sample_normal(seed, streams_.noise, positions, shape, options) * sigmas_.front();
  auto sigma = torch::full({n}, sigmas_.front(), options);
  if (steps > 1) {
    const auto start = (uniform_per_sample(seed, streams_.start_step, positions) * static_cast<double>(steps)).floor().to(device, torch::kInt64);
    torch::NoGradGuard no_grad;
    auto state = x;
    for (int64_t i = 1; i < steps; ++i) {
      const auto denoised = network_.denoise(state, torch::full({n}, sigmas_[static_cast<size_t>(i - 1)], options), labels);
      state = denoised + sigmas_[static_cast<size_t>(i)] * per_sample_normal(seed, streams_.simulation + static_cast<uint64_t>(i), positions, shape, options);
      const auto here = start.eq(i);
      x = torch::where(here.view(per_row), state, x);
      sigma = torch::where(here, torch::full({n}, sigmas_[static_cast<size_t>(i)], options), sigma);
    }
  }
  return {network_.denoise(x, sigma, labels), labels};
}

}  // namespace distillery
