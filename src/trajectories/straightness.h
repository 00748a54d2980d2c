// defines: require_intermediate_states, trajectory_straightness, store_straightness, StoreStraightness
// The straightness of probability-flow trajectories, S(Z) = ∫ E‖(Z₁ − Z₀) − Ż_τ‖² dτ (Liu, Gong
// & Liu 2023, "Flow Straight and Fast", §2.2): 0 for straight paths at constant speed, which one
// Euler step follows exactly. Trajectories are read in rectified-flow coordinates, where a state
// x at σ is Z = x/(1 + σ) at τ = 1/(1 + σ) (τ = 0 noise, τ = 1 data), and the integral is taken
// over the stored states as a path of straight pieces, per unit of the τ it spans (a store starts
// at σ_max, not at τ = 0: 80 is τ = 0.012). Coarser storage (every:K) sees fewer bends, so only
// stores with the same stored σ compare.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <vector>

namespace distillery {

class Progress;

// Error unless a trajectory has states between its ends (`states` ≥ 3).
void require_intermediate_states(int64_t states);

// Per trajectory ([N]): `states` [N, T, *shape] at the decreasing `sigmas` (T ≥ 3 values, the last
// may be 0); Error for a store of endpoints alone.
at::Tensor trajectory_straightness(const at::Tensor& states, const std::vector<double>& sigmas);

struct StoreStraightness {
  double mean = 0, standard_error = 0;  // over the trajectories
  int64_t trajectories = 0, states = 0;
};
// Every trajectory of a complete store, read in batches (memory stays bounded).
StoreStraightness store_straightness(const std::filesystem::path& dir, Progress* progress = nullptr);

}  // namespace distillery
