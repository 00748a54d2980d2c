// defines: reflow_sigmas, add_reflow_fields, make_reflow
// Rectified flow and reflow (Liu, Gong & Liu 2023, "Flow Straight and Fast: Learning to Generate
// and Transfer Data with Rectified Flow"). A rectified flow learns to move along the straight
// line between the two ends of each pair (z, x), noise and data: X_t = (1 − t)·x + t·z with
// velocity z − x, t uniform in (0, 1). In EDM's formulation that line is x + σ·z at
// σ = t/(1 − t), scaled by 1 − t, and a denoiser's estimate x̂ gives the velocity (X_t − x̂)/t, so
// the velocity loss ‖v̂ − v‖² is the denoising loss ‖D(x + σ·z; σ) − x‖² weighted by
// 1/t² = ((1 + σ)/σ)²; the student keeps its preconditioning. reflow.pairs picks the coupling:
// `independent` (1-RF: a data.* example and fresh noise) or `store` (k-reflow: the noise and the
// endpoint of every trajectory of reflow.store, solutions of the previous flow's ODE; the
// pieces a store was recorded in with --part are one store). The exact probability-flow ODE of
// an EDM teacher is its 1-rectified flow (same marginals, and the velocity E[z − x | X_t]), so a
// store recorded from it trains 2-RF. t is uniform over the teacher's σ range. Students sample
// with Euler at points uniform in t (the flow's own clock), which `generate --steps` also offers
// for 2 and 4 steps. SlimFlow's annealing reflow (Zhu, Liu, Lou, Hu & Li 2024, "SlimFlow:
// Training Smaller One-Step Diffusion Models with Rectified Flow") eases a student that cannot
// start from the teacher (a smaller one, student.init: scratch) into the coupling: the store's
// noise is mixed with fresh noise, √(1 − β²)·z + β·ε, β falling linearly from 1 (independent
// pairs: 1-RF towards the teacher's samples) to 0 over reflow.anneal_steps.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

// `steps` σ points uniform in rectified-flow time from t(σ_max) down towards 0, largest first,
// without the final 0: t_k = t_max·(1 − k/steps), σ_k = t_k/(1 − t_k).
std::vector<double> reflow_sigmas(double sigma_max, int64_t steps);
// SlimFlow's β after `step` steps of `anneal_steps` (0: no annealing, β = 0).
double annealed_randomness(int64_t step, int64_t anneal_steps);

void add_reflow_fields(ConfigSchema& schema);
// `teacher`: a teacher spec (teacher.h), the store's teacher for reflow.pairs: store; the config
// holds student.*, reflow.*, data.*, model.* (scratch).
std::unique_ptr<TrainingMethod> make_reflow(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
