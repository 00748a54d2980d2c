// defines: ScmTangent, scm_tangent, add_scm_fields, make_scm
// Continuous-time consistency models, sCM (Lu & Song 2024, "Simplifying, Stabilizing and
// Scaling Continuous-Time Consistency Models"): sCD with the teacher's flow, sCT with the
// example's own velocity. Everything is in TrigFlow (distill/common/trigflow.h), converted at the
// edge from the EDM student, whose consistency function is its denoiser D. Per row: ln σ ~
// N(P_mean, P_std), t̂ = atan(σ/σ_d), x̂ = cos t̂·x + sin t̂·σ_d·z; dx̂/dt̂ is σ_d·F_teacher(x̂, t̂)
// (sCD) or cos t̂·σ_d·z − sin t̂·x (sCT). The tangent of the consistency condition is
//   g = −cos² t̂·(σ_d·F⁻ − dx̂/dt̂) − r·cos t̂·sin t̂·(x̂ + σ_d·dF⁻/dt̂),
// with F⁻ the student held without gradient, dF⁻/dt̂ its JVP along (dx̂/dt̂, 1) (models/jvp.h),
// and r warming up from 0 to 1. g is normalised, g/(‖g‖ + c), and the loss is
//   w(σ)·e^(−u(t̂))·mean((F_θ − F⁻ − g)²) + u(t̂)
// with the prior weighting w = 1/σ and u a learned adaptive weighting of t̂ (a linear layer on
// fixed Fourier features), trained with the student.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

// g before normalisation, from F⁻ (the held student's output), its tangent dF⁻/dt̂·cos t̂·sin t̂
// (the JVP along cos t̂·sin t̂·(dx̂/dt̂, 1), as sCM computes it), x̂, dx̂/dt̂ and t̂ per row.
at::Tensor scm_tangent(const at::Tensor& held_output, const at::Tensor& scaled_output_tangent, const at::Tensor& x_hat, const at::Tensor& x_hat_velocity,
                       const at::Tensor& t_hat, double sigma_data, double warmup);

void add_scm_fields(ConfigSchema& schema);
std::unique_ptr<TrainingMethod> make_scm(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
