// defines: random_hflip
// Data augmentation for image batches.
#pragma once

#include <ATen/core/Tensor.h>

namespace distillery {

// Each image of [N, C, H, W] mirrored left-right with probability ½, drawn from torch's
// global generator (the trainer seeds it per step, so the flips are part of the step's
// reproducible randomness).
at::Tensor random_hflip(const at::Tensor& images);

}  // namespace distillery
