// defines: PairedAugmentation, augment_alike
// Diffusion2GAN's ensembled distance (E-LatentLPIPS, Kang et al. 2024): before the regression
// compares the student's image with its pair's, both go through the same random augmentation,
// DiffAugment's (Zhao et al. 2020) colour, translation and cutout, drawn afresh each step. The
// distance then cannot be met by matching a pair's exact pixels, only by matching what
// survives every such view of it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace distillery {

// One row's draw: a brightness offset in [−½, ½), a contrast factor in [½, 3/2), a translation
// by whole pixels of at most ⌊size/8 + ½⌋ each way (zeros shifted in), and a zeroed square of
// half the size, centred anywhere on the image (clipped at its edges).
struct PairedAugmentation {
  double brightness, contrast;
  int64_t shift_y, shift_x, cutout_y, cutout_x;
};

// Row r's draw for sample position positions[r] from (seed, stream + 0..5), for images of
// height h and width w: the same whatever the batch, the process count or the device.
std::vector<PairedAugmentation> draw_paired_augmentations(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, int64_t h, int64_t w);

// a and b ([N, C, H, W], the same shape) with row r of each augmented by draws[r]; differentiable
// in both.
std::pair<at::Tensor, at::Tensor> augment_alike(const at::Tensor& a, const at::Tensor& b, const std::vector<PairedAugmentation>& draws);

}  // namespace distillery
