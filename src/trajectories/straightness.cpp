#include "trajectories/straightness.h"

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/progress.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

void require_intermediate_states(int64_t states) {
  // Two states make one straight piece, which would score 0 whatever the path between them.
  DISTILLERY_CHECK(states >= 3, Error("straightness needs the states between a trajectory's ends").expected("at least 3 stored states")
                                    .got(std::to_string(states)).hint("record the store with --store full or every:K"));
}

at::Tensor trajectory_straightness(const at::Tensor& states, const std::vector<double>& sigmas) {
  const auto T = static_cast<int64_t>(sigmas.size());
  require_intermediate_states(T);
  DISTILLERY_CHECK(states.dim() >= 3 && states.size(1) == T,
                   Error("straightness needs one state per σ").expected(std::to_string(T) + " states per trajectory")
                       .got(std::to_string(states.dim() >= 2 ? states.size(1) : 0)));
  std::vector<double> tau(sigmas.size());
  for (size_t i = 0; i < sigmas.size(); ++i) tau[i] = 1.0 / (1.0 + sigmas[i]);
  const auto x = states.to(torch::kFloat64).flatten(2);  // [N, T, D]
  const auto z = x * torch::tensor(tau, x.options()).view({1, T, 1});  // Z = x/(1 + σ) = τ·x
  const double span = tau.back() - tau.front();
  const auto overall = (z.select(1, T - 1) - z.select(1, 0)) / span;  // [N, D]
  auto total = torch::zeros({x.size(0)}, x.options());
  for (int64_t k = 0; k + 1 < T; ++k) {
    const double width = tau[static_cast<size_t>(k + 1)] - tau[static_cast<size_t>(k)];
    const auto velocity = (z.select(1, k + 1) - z.select(1, k)) / width;
    total += (velocity - overall).square().sum(1) * (width / span);
  }
  return total;
}

StoreStraightness store_straightness(const std::filesystem::path& dir, Progress* progress) {
  TrajectoryReader reader(dir);
  const auto sigmas = reader.sigmas();
  StoreStraightness result;
  result.trajectories = reader.size();
  result.states = static_cast<int64_t>(sigmas.size());
  constexpr int64_t kBatch = 256;
  double sum = 0, sum_squares = 0;
  for (int64_t first = 0; first < reader.size(); first += kBatch) {
    std::vector<int64_t> indices(static_cast<size_t>(std::min(kBatch, reader.size() - first)));
    std::iota(indices.begin(), indices.end(), first);
    const auto values = trajectory_straightness(reader.trajectories(indices), sigmas);
    sum += values.sum().item<double>();
    sum_squares += values.square().sum().item<double>();
    if (progress) progress->advance(static_cast<int64_t>(indices.size()));
  }
  const auto n = static_cast<double>(result.trajectories);
  result.mean = sum / n;
  result.standard_error = n > 1 ? std::sqrt(std::max(sum_squares / n - result.mean * result.mean, 0.0) / (n - 1)) : 0.0;
  return result;
}

}  // namespace distillery
