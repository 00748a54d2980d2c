#include "distill/common/paired_augmentation.h"

#include <fmt/format.h>
#include <torch/nn/functional/padding.h>
#include <torch/types.h>

#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor_checks.h"

namespace distillery {

namespace {
// DiffAugment's translation ratio (1/8) and cutout ratio (1/2) of the image's side.
int64_t max_shift(int64_t size) { return static_cast<int64_t>(static_cast<double>(size) * 0.125 + 0.5); }
int64_t cutout_size(int64_t size) { return static_cast<int64_t>(static_cast<double>(size) * 0.5 + 0.5); }

// A whole number in [0, count) from a uniform in [0, 1).
int64_t pick(double uniform, int64_t count) { return std::min(static_cast<int64_t>(uniform * static_cast<double>(count)), count - 1); }

at::Tensor per_row(const std::vector<PairedAugmentation>& draws, auto field, const c10::TensorOptions& options) {
  std::vector<double> values;
  for (const auto& draw : draws) values.push_back(static_cast<double>(draw.*field));
  return torch::tensor(values, torch::kFloat64).to(options);
}

at::Tensor augment(const at::Tensor& x, const std::vector<PairedAugmentation>& draws) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const auto real = x.options(), whole = x.options().dtype(torch::kInt64);
  const auto column = [n](const at::Tensor& t) { return t.view({n, 1, 1, 1}); };
  // Colour: a brightness offset, then the contrast about each image's mean.
  auto y = x + column(per_row(draws, &PairedAugmentation::brightness, real));
  const auto mean = y.mean({1, 2, 3}, true);
  y = (y - mean) * column(per_row(draws, &PairedAugmentation::contrast, real)) + mean;
  // Translation: read each output pixel from the zero-padded image, shifted by the row's draw.
  const int64_t sy = max_shift(h), sx = max_shift(w), padded_w = w + 2 * sx;
  const auto padded = torch::nn::functional::pad(y, torch::nn::functional::PadFuncOptions({sx, sx, sy, sy}));
  const auto r = torch::arange(h, whole).view({1, h, 1}), q = torch::arange(w, whole).view({1, 1, w});
  const auto rows = r + sy - per_row(draws, &PairedAugmentation::shift_y, whole).view({n, 1, 1});
  const auto cols = q + sx - per_row(draws, &PairedAugmentation::shift_x, whole).view({n, 1, 1});
  const auto source = (rows * padded_w + cols).view({n, 1, h * w}).expand({n, c, h * w});
  y = padded.flatten(2).gather(2, source).view({n, c, h, w});
  // Cutout: a square of half the side, zeroed.
  const int64_t ch = cutout_size(h), cw = cutout_size(w);
  const auto top = per_row(draws, &PairedAugmentation::cutout_y, whole).view({n, 1, 1}) - ch / 2;
  const auto left = per_row(draws, &PairedAugmentation::cutout_x, whole).view({n, 1, 1}) - cw / 2;
  const auto inside = (r >= top) & (r < top + ch) & (q >= left) & (q < left + cw);
  return y * torch::logical_not(inside).unsqueeze(1).to(real.dtype());
}
}  // namespace

std::vector<PairedAugmentation> draw_paired_augmentations(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, int64_t h, int64_t w) {
  std::vector<at::Tensor> uniforms;
  for (uint64_t k = 0; k < 6; ++k) uniforms.push_back(uniform_per_sample(seed, stream + k, positions));
  const int64_t sy = max_shift(h), sx = max_shift(w);
  std::vector<PairedAugmentation> draws;
  for (size_t r = 0; r < positions.size(); ++r) {
    const auto u = [&](size_t k) { return uniforms[k].data_ptr<double>()[r]; };
    draws.push_back({u(0) - 0.5, u(1) + 0.5, pick(u(2), 2 * sy + 1) - sy, pick(u(3), 2 * sx + 1) - sx,
                     pick(u(4), h + 1 - cutout_size(h) % 2), pick(u(5), w + 1 - cutout_size(w) % 2)});
  }
  return draws;
}

std::pair<at::Tensor, at::Tensor> augment_alike(const at::Tensor& a, const at::Tensor& b, const std::vector<PairedAugmentation>& draws) {
  DISTILLERY_CHECK(a.dim() == 4, Error("the paired augmentation needs an image batch").expected("[N, C, H, W]").got(std::to_string(a.dim()) + " dimensions"));
  check_shape(b, a.sizes().vec(), "the paired augmentation's second batch (must match the first)");
  DISTILLERY_CHECK(a.size(0) == static_cast<int64_t>(draws.size()),
                   Error("the paired augmentation needs one draw per image").expected(std::to_string(a.size(0))).got(std::to_string(draws.size())));
  return {augment(a, draws), augment(b, draws)};
}

}  // namespace distillery
