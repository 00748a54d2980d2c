// defines: quantize_to_uint8, drawable_as_image, write_image_grid, write_scatter_plot, PlotSeries, PlotExtent,
//          line_plot_extent, write_line_plot
// PNG output for people to look at: image grids for image-shaped samples and scatter plots
// for 2-D points, line plots for curves (FD against training step).
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>
#include <vector>

namespace distillery {

// [-1, 1] floats -> uint8 exactly as EDM saves images: floor(x·127.5 + 128) clipped to [0, 255].
at::Tensor quantize_to_uint8(const at::Tensor& images);

// Whether samples of this shape are images a PNG can show: [C, H, W] with C = 1 or 3 (not, for
// one, a VAE's 4-channel latents).
bool drawable_as_image(const std::vector<int64_t>& sample_shape);

// images: [N, C, H, W] in [-1, 1] with C = 1 or 3; a grid with `columns` columns (0: ≈√N).
void write_image_grid(const std::filesystem::path& path, const at::Tensor& images, int64_t columns = 0);

// points: [N, 2]; optional markers: [K, 2] (e.g. the mixture's means), drawn as crosses.
void write_scatter_plot(const std::filesystem::path& path, const at::Tensor& points, const at::Tensor& markers,
                        const std::string& title);

}  // namespace distillery

namespace distillery {

struct PlotSeries {
  std::string name;  // shown in the legend
  std::vector<double> x, y;
};

// The axes' lowest values and spans (in log10 where asked) that hold every point; Error naming
// `source` (the values' file) unless the series are plottable.
struct PlotExtent {
  double x_lo, x_span, y_lo, y_span;
};
PlotExtent line_plot_extent(const std::vector<PlotSeries>& series, bool log_y, bool log_x, const std::string& source);

// Each series as points joined by lines, with a legend; either axis on a log10 scale when asked.
void write_line_plot(const std::filesystem::path& path, const std::vector<PlotSeries>& series, const std::string& title, bool log_y = false,
                     bool log_x = false);

}  // namespace distillery
