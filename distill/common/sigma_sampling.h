// defines: karras_grid_ascending, KarrasGridSampler, lognormal_sigmas, uniform_time_sigmas, ict_discretization_steps,
//          DiscretizedLognormal
// The σ (and time) draws distillation methods share, all counter-based: a draw for sample
// position p depends only on (seed, stream, p), on the host, then copied to the device.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <vector>

namespace distillery {

// The N points of a Karras grid between σ_min and σ_max, ascending (σ_0 = σ_min, σ_{N−1} = σ_max).
std::vector<double> karras_grid_ascending(double sigma_min, double sigma_max, double rho, int64_t points);

// σ uniform over the points of a Karras grid (ρ = 7, σ_min..σ_max) whose index fraction, counted
// from σ_min, lies in [low, high]: DMD2's timestep ranges ([0.02, 0.98] for distribution matching).
class KarrasGridSampler {
 public:
  KarrasGridSampler(double sigma_min, double sigma_max, int points = 1000);
  at::Tensor draw(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, double low, double high, const c10::TensorOptions& options) const;
  const std::vector<double>& ascending() const { return ascending_; }

 private:
  std::vector<double> ascending_;
  at::Tensor ascending_tensor_;  // the same, float64 on the CPU, looked up at every draw
};

// σ = exp(P_mean + P_std·n) per position: EDM training, ECT (−1.1, 2.0), sCM's time (−1.0, 1.4).
at::Tensor lognormal_sigmas(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, double p_mean, double p_std,
                            const c10::TensorOptions& options);

// Rectified-flow time t uniform in (0, 1), as σ = t/(1 − t).
at::Tensor uniform_time_sigmas(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, const c10::TensorOptions& options);

// iCT's curriculum (Song & Dhariwal 2023, eq. 5): N(k) = min(s0·2^⌊k/K′⌋, s1) + 1 grid points at
// step k of K, K′ = ⌊K / (⌊log2(s1/s0)⌋ + 1)⌋.
int64_t ict_discretization_steps(int64_t step, int64_t total_steps, int64_t s0 = 10, int64_t s1 = 1280);

// iCT's discretised log-normal over the adjacent pairs (σ_i, σ_{i+1}) of an ascending grid:
// p(i) ∝ erf((ln σ_{i+1} − P_mean)/(√2·P_std)) − erf((ln σ_i − P_mean)/(√2·P_std)).
class DiscretizedLognormal {
 public:
  DiscretizedLognormal(std::vector<double> ascending, double p_mean = -1.1, double p_std = 2.0);
  const std::vector<double>& probabilities() const { return probabilities_; }
  // The pair index i of each position (so σ_i = ascending[i], σ_{i+1} = ascending[i + 1]).
  std::vector<int64_t> draw(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions) const;

 private:
  std::vector<double> ascending_, probabilities_, cumulative_;
};

}  // namespace distillery
