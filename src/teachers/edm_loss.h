// defines: edm_loss
// The EDM denoising loss (Karras et al. 2022, eq. 2 with the weighting of Table 1):
// mean over samples and elements of λ(σ)·(D(x0 + σ·n; σ) − x0)², λ(σ) = (σ² + σ_d²)/(σ·σ_d)².
#pragma once

#include <ATen/core/Tensor.h>

#include "models/denoiser.h"

namespace distillery {

// x0, noise: [N, *shape]; sigma: [N]; labels: [N] or undefined. `target`: what D should give
// instead of x0 (teacher score matching regresses another denoiser's D of the same input).
at::Tensor edm_loss(Denoiser& denoiser, const at::Tensor& x0, const at::Tensor& sigma, const at::Tensor& noise, const at::Tensor& labels,
                    double sigma_data, const at::Tensor& target = {});

}  // namespace distillery
