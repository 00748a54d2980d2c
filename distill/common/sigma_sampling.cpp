#include "distill/common/sigma_sampling.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "samplers/schedule.h"

namespace distillery {

std::vector<double> karras_grid_ascending(double sigma_min, double sigma_max, double rho, int64_t points) {
  auto grid = make_sigmas({ScheduleKind::Karras, sigma_min, sigma_max, rho}, static_cast<int>(points));
  grid.pop_back();  // the appended 0
  std::reverse(grid.begin(), grid.end());
  return grid;
}

KarrasGridSampler::KarrasGridSampler(double sigma_min, double sigma_max, int points) : ascending_(karras_grid_ascending(sigma_min, sigma_max, 7.0, points)) {
  ascending_tensor_ = torch::tensor(ascending_, torch::kFloat64);
}

at::Tensor KarrasGridSampler::draw(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, double low, double high,
                                   const c10::TensorOptions& options) const {
  const auto points = static_cast<double>(ascending_.size());
  const auto u = uniform_per_sample(seed, stream, positions);
  const double first = std::floor(low * (points - 1)), last = std::floor(high * (points - 1));
  const auto index = (first + u * (last - first + 1)).floor().clamp(first, last).to(torch::kInt64);
  return ascending_tensor_.index_select(0, index).to(options);
}

at::Tensor lognormal_sigmas(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, double p_mean, double p_std,
                            const c10::TensorOptions& options) {
  return (p_mean + p_std * per_sample_normal(seed, stream, positions, {}, torch::kFloat64)).exp().to(options);
}

at::Tensor uniform_time_sigmas(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, const c10::TensorOptions& options) {
  const auto t = uniform_per_sample(seed, stream, positions).clamp(1e-6, 1.0 - 1e-6);
  return (t / (1.0 - t)).to(options);
}

int64_t ict_discretization_steps(int64_t step, int64_t total_steps, int64_t s0, int64_t s1) {
  DISTILLERY_CHECK(s0 > 0 && s1 >= s0 && total_steps > 0 && step >= 0,
                   Error("iCT's curriculum needs 0 < s0 ≤ s1, a positive number of steps and a step ≥ 0").got(fmt::format("s0 {}, s1 {}, K {}, k {}", s0, s1, total_steps, step)));
  const int64_t doublings = static_cast<int64_t>(std::floor(std::log2(static_cast<double>(s1) / static_cast<double>(s0))));
  const int64_t stage_length = std::max<int64_t>(total_steps / (doublings + 1), 1);
  const double doubled = static_cast<double>(s0) * std::exp2(static_cast<double>(step / stage_length));
  return static_cast<int64_t>(std::min(doubled, static_cast<double>(s1))) + 1;
}

DiscretizedLognormal::DiscretizedLognormal(std::vector<double> ascending, double p_mean, double p_std) : ascending_(std::move(ascending)) {
  DISTILLERY_CHECK(ascending_.size() >= 2 && p_std > 0, Error("a discretised log-normal needs a grid of at least two σ and P_std > 0"));
  const auto cdf = [&](double sigma) { return std::erf((std::log(sigma) - p_mean) / (std::sqrt(2.0) * p_std)); };
  for (size_t i = 0; i + 1 < ascending_.size(); ++i) {
    DISTILLERY_CHECK(ascending_[i] > 0 && ascending_[i + 1] > ascending_[i], Error("the grid must be positive and increasing").got(std::to_string(ascending_[i + 1])));
    probabilities_.push_back(cdf(ascending_[i + 1]) - cdf(ascending_[i]));
  }
  const double total = std::accumulate(probabilities_.begin(), probabilities_.end(), 0.0);
  for (auto& p : probabilities_) p /= total;
  std::partial_sum(probabilities_.begin(), probabilities_.end(), std::back_inserter(cumulative_));
}

std::vector<int64_t> DiscretizedLognormal::draw(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions) const {
  const auto u = uniform_per_sample(seed, stream, positions);
  const auto* values = u.data_ptr<double>();
  std::vector<int64_t> index(positions.size());
  for (size_t r = 0; r < positions.size(); ++r) {
    const auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), values[r]);
    index[r] = std::min<int64_t>(it - cumulative_.begin(), static_cast<int64_t>(probabilities_.size()) - 1);
  }
  return index;
}

}  // namespace distillery
