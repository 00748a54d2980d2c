// defines: JvpMode, DenoiserJvp, denoiser_jvp
// The directional derivative of a denoiser, (∂D/∂x)·t_x + (∂D/∂σ)·t_σ: the tangent that
// continuous-time consistency training (sCM, Lu & Song 2024) differentiates along the ODE.
// Autodiff gives it exactly by reverse over reverse: g(v) = Jᵀv is linear in v, so its own
// derivative along t is J·t. (LibTorch 2.11's forward mode fails inside the UNet: group
// norm's forward rule views a tangent whose strides are not the input's.) It needs every
// operation twice differentiable, so attention takes ATen's math path inside it: the fused
// kernel and SDPA's flash kernels have no second derivative. The central finite difference
// needs neither, costs three evaluations, and serves as the check.
#pragma once

#include <ATen/core/Tensor.h>

#include "models/denoiser.h"

namespace distillery {

enum class JvpMode { Autodiff, FiniteDifference };

struct DenoiserJvp {
  at::Tensor denoised;  // D(x; σ)
  at::Tensor tangent;   // its derivative along (x_tangent, sigma_tangent), shaped like x
};

// x_tangent like x, sigma_tangent like σ ([N]). `step`: the finite difference's h, in units of
// the tangents (central difference, error O(h²)).
DenoiserJvp denoiser_jvp(Denoiser& denoiser, const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels, const at::Tensor& x_tangent,
                         const at::Tensor& sigma_tangent, JvpMode mode = JvpMode::Autodiff, double step = 1e-3);

}  // namespace distillery
