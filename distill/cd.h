// defines: CdSettings, cd_settings_from, add_cd_fields, consistency_teacher_estimate, make_cd
// Consistency distillation, CD (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models",
// Algorithm 2). The student f_θ, initialised from the teacher's network under the consistency
// preconditioning (f(x; σ_min) = x exactly), maps any point of a probability-flow ODE
// trajectory to its origin. Per row: an example x from data.*, an adjacent pair σ_n < σ_{n+1}
// of an N-point Karras grid drawn uniformly, x_{n+1} = x + σ_{n+1}·z; the teacher's one solver
// step (Heun or Euler, the per-row step of samplers/) brings x_{n+1} to x̂_n at σ_n; the loss is
// d(f_θ(x_{n+1}; σ_{n+1}), f_θ⁻(x̂_n; σ_n)) with θ⁻ a stop-gradient target kept by the trainer as
// θ⁻ ← μ·θ⁻ + (1 − μ)·θ, and d the squared L2, pseudo-Huber or feature distance. Students
// sample in one step, or several with multistep consistency sampling (student.sigmas).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

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

struct CdSettings {
  double lr = 1e-4;
  int64_t grid_points = 18;            // N of the Karras grid (σ_min..σ_max, ρ)
  double rho = 7.0;
  double target_decay = 0.95;          // μ of the target network θ⁻
  std::string solver = "heun";         // the teacher's step: heun | euler
};

void add_cd_fields(ConfigSchema& schema);
CdSettings cd_settings_from(const Config& config);

// x̂_n: one step of `solver` per row from σ_next[r] to σ_now[r] on the teacher's ODE, without
// gradient; exactly the solver's own step on that grid.
at::Tensor consistency_teacher_estimate(Denoiser& teacher, const Sampler& solver, const at::Tensor& x_next, const std::vector<double>& sigma_next,
                                        const std::vector<double>& sigma_now, const SampleContext& context);

// `teacher`: a teacher spec (teacher.h); the config holds student.*, cd.*, data.*, model.* (scratch).
std::unique_ptr<TrainingMethod> make_cd(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
