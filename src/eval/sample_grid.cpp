#include "eval/sample_grid.h"

#include <fmt/format.h>

#include <cmath>

#include "io/image.h"
#include "samplers/sampling.h"

namespace distillery {

GridCallback make_sample_grid_writer(const std::vector<int64_t>& sample_shape) {
  return [sample_shape](Denoiser& network, const SampleRequest& request, const std::filesystem::path& path, int64_t step) {
    // Nothing to look at in other shapes, latents among them.
    if (!drawable_as_image(sample_shape) && sample_shape != std::vector<int64_t>{2}) return;
    const auto samples = draw_samples(network, request).samples;
    if (sample_shape.size() == 3) write_image_grid(path, samples, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(request.num)))));
    else write_scatter_plot(path, samples, {}, fmt::format("samples at step {}", step));
  };
}

}  // namespace distillery
