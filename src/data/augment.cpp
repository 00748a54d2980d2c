#include "data/augment.h"

#include <torch/types.h>

#include "core/error.h"
#include "core/rng.h"

namespace distillery {

at::Tensor hflip_per_sample(const at::Tensor& images, uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions) {
  DISTILLERY_CHECK(images.dim() == 4, Error("horizontal flips need an image batch").expected("[N, C, H, W]").got(std::to_string(images.dim()) + " dimensions"));
  DISTILLERY_CHECK(images.size(0) == static_cast<int64_t>(positions.size()),
                   Error("horizontal flips need a sample position per image").expected(std::to_string(images.size(0))).got(std::to_string(positions.size())));
  const auto flip = uniform_per_sample(seed, stream, positions).lt(0.5).view({-1, 1, 1, 1}).to(images.device());
  return torch::where(flip, images.flip({3}), images);
}

at::Tensor drop_labels_per_sample(const at::Tensor& labels, double probability, uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions) {
  DISTILLERY_CHECK(labels.dim() == 1 && labels.size(0) == static_cast<int64_t>(positions.size()),
                   Error("label dropout needs a sample position per label").expected(std::to_string(positions.size()) + " labels")
                       .got(std::to_string(labels.numel())));
  if (probability == 0) return labels;
  const auto dropped = uniform_per_sample(seed, stream, positions).lt(probability).to(labels.device());
  return torch::where(dropped, torch::full_like(labels, -1), labels);
}

}  // namespace distillery
