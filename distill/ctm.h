// defines: CtmTimes, ctm_times, ctm_teacher_solve, add_ctm_fields, make_ctm
// Consistency trajectory model, CTM (Kim, Lai, Liao, Murata, Takida, Uesaka, He, Mitsufuji &
// Ermon 2024, "Consistency Trajectory Models: Learning Probability Flow ODE Trajectory of
// Diffusion"). The student jumps from any σ = t to any smaller s along the teacher's ODE:
// G_θ(x_t, t, s) = (s/t)·x_t + (1 − s/t)·g_θ(x_t, t, s), g_θ the teacher's network under EDM
// preconditioning with a second time input for s (models/: zero-initialised, so training starts
// from the teacher's Euler step). Each step draws, on a descending N-point Karras grid, t at
// index i, u = k points further (k uniform in 1..ctm.teacher_steps, one k per batch) and s
// uniform at or below u; the teacher's k solver steps carry x_t = x + t·z to x_u; the loss is
// d(G⁻(G_θ(x_t, t, s), s, 0), G⁻(G⁻(x_u, u, s), s, 0)): the student's jump and the target's
// jump from x_u, each carried to the data by the EMA target θ⁻ (gradient through the first
// one's input only). The denoising loss trains g_θ(x, σ, σ), the student's own EDM denoiser.
// CTM's GAN term (ctm.gan_weight > 0) trains the one-step jump G_θ(x_t, t, 0) against the
// batch's real examples through a discriminator (common/discriminator.h) with heads on a
// frozen network, as the paper's reads a pretrained one: by default the teacher's features of
// noised images (LADD's reader), the one network every recipe has; or a Fashion-MNIST
// classifier's (ctm.gan_features: classifier), which should not be the one FD_fmnist is
// measured with.
// Students sample by γ-sampling (samplers/multistep.cpp) with ctm.gamma.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace distillery {

class Config;
class ConfigSchema;
class Denoiser;
class Sampler;
class TrainingMethod;
struct SampleContext;

// Indices into a descending σ grid of N points, per row: t < u = t + k ≤ N − 2, u ≤ s ≤ N − 1.
struct CtmTimes {
  int64_t k = 0;  // the teacher's steps from t to u, the same for every row
  std::vector<int64_t> t, u, s;
};
// k uniform in 1..min(max_teacher_steps, N − 2), keyed by (seed, batch_position), the whole
// batch's; t uniform in [0, N − 1 − k) and s uniform in [u, N − 1], keyed by (seed, positions).
// N ≥ 3.
CtmTimes ctm_times(int64_t grid_points, int64_t max_teacher_steps, uint64_t seed, int64_t batch_position, const std::vector<int64_t>& positions);

// x_u: the teacher's `times.k` solver steps along `grid` from each row's t to its u, without gradient.
at::Tensor ctm_teacher_solve(Denoiser& teacher, const Sampler& solver, const at::Tensor& x_t, const std::vector<double>& grid, const CtmTimes& times,
                             const SampleContext& context);

void add_ctm_fields(ConfigSchema& schema);
// `teacher`: a teacher spec (teacher.h); the config holds student.*, ctm.*, data.*, model.* (scratch).
std::unique_ptr<TrainingMethod> make_ctm(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
