// defines: row_scale, TrigFlowJvp, trigflow_output, trigflow_jvp
// The TrigFlow view (Lu & Song 2024, "Simplifying, Stabilizing and Scaling Continuous-Time
// Consistency Models", §2) of an EDM denoiser, converted at the edge: with x̂ = cos t̂·x₀ +
// sin t̂·σ_d·ε, the EDM state is x = x̂ / cos t̂ at σ = σ_d·tan t̂, and the network's flow output is
// F(x̂, t̂) = (cos t̂·x̂ − D(x̂ / cos t̂; σ_d·tan t̂)) / (σ_d·sin t̂), so that the consistency function
// f(x̂, t̂) = cos t̂·x̂ − sin t̂·σ_d·F is exactly D. Under EDM's preconditioning F is minus the raw
// network output, with c_in·x = x̂/σ_d: EDM already is TrigFlow up to the time embedding.
#pragma once

#include <ATen/core/Tensor.h>

#include "models/jvp.h"

namespace distillery {

class Denoiser;

// A per-row tensor [N] viewed as [N, 1, …] to scale the rows of `like`.
at::Tensor row_scale(const at::Tensor& per_row, const at::Tensor& like);

// t̂ per row [N] in (0, π/2), in x̂'s dtype and device.
at::Tensor trigflow_output(Denoiser& denoiser, const at::Tensor& x_hat, const at::Tensor& t_hat, const at::Tensor& labels, double sigma_data);

struct TrigFlowJvp {
  at::Tensor output;   // F(x̂, t̂), without gradient
  at::Tensor tangent;  // its derivative along (x̂_tangent, t̂_tangent)
};

// The tangent by the chain rule through the denoiser's own JVP (models/jvp.h): the direction in
// (x̂, t̂) maps to (dx, dσ) = (dx̂/cos t̂ + x̂·sin t̂/cos² t̂·dt̂, σ_d/cos² t̂·dt̂).
TrigFlowJvp trigflow_jvp(Denoiser& denoiser, const at::Tensor& x_hat, const at::Tensor& t_hat, const at::Tensor& labels, double sigma_data,
                         const at::Tensor& x_hat_tangent, const at::Tensor& t_hat_tangent, JvpMode mode = JvpMode::Autodiff, double step = 1e-3);

}  // namespace distillery
