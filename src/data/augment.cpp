#include "data/augment.h"

#include <torch/types.h>

#include "core/error.h"

namespace distillery {

at::Tensor random_hflip(const at::Tensor& images) {
  DISTILLERY_CHECK(images.dim() == 4, Error("horizontal flips need an image batch").expected("[N, C, H, W]").got(std::to_string(images.dim()) + " dimensions"));
  const auto flip = torch::rand({images.size(0)}).lt(0.5).view({-1, 1, 1, 1});
  return torch::where(flip, images.flip({3}), images);
}

}  // namespace distillery
