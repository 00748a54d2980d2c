#include "data/augment.h"

#include <torch/types.h>

#include "core/error.h"

namespace distillery {

at::Tensor random_hflip(const at::Tensor& images) {
  DISTILLERY_CHECK(images.dim() == 4, Error("horizontal flips need an image batch").expected("[N, C, H, W]").got(std::to_string(images.dim()) + " dimensions"));
  // Drawn by the CPU generator and copied, so the flips do not depend on the device.
  const auto flip = torch::rand({images.size(0)}).lt(0.5).view({-1, 1, 1, 1}).to(images.device());
  return torch::where(flip, images.flip({3}), images);
}

}  // namespace distillery
