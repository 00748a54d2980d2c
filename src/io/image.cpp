#include "io/image.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <cmath>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "core/tensor_checks.h"
#include "io/atomic_file.h"

namespace distillery {

namespace {
void write_png(const std::filesystem::path& path, const cv::Mat& image) {
  std::vector<uint8_t> png;
  DISTILLERY_CHECK(cv::imencode(".png", image, png), Error("PNG encoding failed").file(path.string()));
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(png.data()), png.size()));
}

// Round numbers 1, 2, 5 × 10^k so that about `target` ticks span [lo, hi].
double tick_step(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw) return m * magnitude;
  return 10.0 * magnitude;
}
}  // namespace

at::Tensor quantize_to_uint8(const at::Tensor& images) {
  return (images.to(torch::kFloat32) * 127.5f + 128.0f).floor().clamp(0, 255).to(torch::kUInt8);
}

void write_image_grid(const std::filesystem::path& path, const at::Tensor& images, int64_t columns) {
  check_shape(images, {kAnySize, kAnySize, kAnySize, kAnySize}, "images for a grid [N, C, H, W]");
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  DISTILLERY_CHECK(n > 0, Error("no images to write").file(path.string()));
  DISTILLERY_CHECK(c == 1 || c == 3, Error("image grids need 1 or 3 channels").file(path.string()).got(std::to_string(c)));
  if (columns <= 0) columns = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t rows = (n + columns - 1) / columns;
  // [rows·H, columns·W, C], padding cells black, channels last for OpenCV.
  auto padded = torch::zeros({rows * columns, c, h, w}, torch::kUInt8);
  padded.narrow(0, 0, n).copy_(quantize_to_uint8(images.detach().cpu()));
  auto grid = padded.reshape({rows, columns, c, h, w}).permute({0, 3, 1, 4, 2}).reshape({rows * h, columns * w, c}).contiguous();
  cv::Mat mat(static_cast<int>(rows * h), static_cast<int>(columns * w), c == 1 ? CV_8UC1 : CV_8UC3, grid.data_ptr<uint8_t>());
  if (c == 3) cv::cvtColor(mat, mat, cv::COLOR_RGB2BGR);
  write_png(path, mat);
}

void write_scatter_plot(const std::filesystem::path& path, const at::Tensor& points, const at::Tensor& markers,
                        const std::string& title) {
  check_shape(points, {kAnySize, 2}, "points for a scatter plot");
  const auto p = points.detach().cpu().to(torch::kFloat64).contiguous();
  const auto m = markers.defined() ? markers.detach().cpu().to(torch::kFloat64).contiguous() : torch::empty({0, 2}, torch::kFloat64);
  const auto all = torch::cat({p, m});
  DISTILLERY_CHECK(all.size(0) > 0 && torch::isfinite(all).all().item<bool>(),
                   Error("scatter plot needs at least one point and only finite coordinates").file(path.string()));
  // Equal aspect: one scale for both axes, centred on the data.
  const auto lo = std::get<0>(all.min(0)), hi = std::get<0>(all.max(0));
  const double span = std::max({(hi - lo).max().item<double>() * 1.1, 1e-6});
  const double cx = (lo[0].item<double>() + hi[0].item<double>()) / 2, cy = (lo[1].item<double>() + hi[1].item<double>()) / 2;
  const double x0 = cx - span / 2, y0 = cy - span / 2;

  constexpr int kSize = 800, kMargin = 70;
  constexpr int kPlot = kSize - 2 * kMargin;
  cv::Mat canvas(kSize, kSize, CV_8UC3, cv::Scalar(255, 255, 255));
  auto to_pixel = [&](double x, double y) {
    return cv::Point(kMargin + static_cast<int>(std::lround((x - x0) / span * kPlot)),
                     kSize - kMargin - static_cast<int>(std::lround((y - y0) / span * kPlot)));
  };
  const double step = tick_step(0, span, 6);
  const cv::Scalar grey(200, 200, 200), black(0, 0, 0);
  for (double t = std::ceil(x0 / step) * step; t <= x0 + span; t += step) {
    const int px = to_pixel(t, y0).x;
    cv::line(canvas, {px, kMargin}, {px, kSize - kMargin}, grey, 1);
    cv::putText(canvas, fmt::format("{:g}", std::abs(t) < step / 2 ? 0.0 : t), {px - 15, kSize - kMargin + 22}, cv::FONT_HERSHEY_SIMPLEX, 0.45, black, 1, cv::LINE_AA);
  }
  for (double t = std::ceil(y0 / step) * step; t <= y0 + span; t += step) {
    const int py = to_pixel(x0, t).y;
    cv::line(canvas, {kMargin, py}, {kSize - kMargin, py}, grey, 1);
    cv::putText(canvas, fmt::format("{:g}", std::abs(t) < step / 2 ? 0.0 : t), {8, py + 5}, cv::FONT_HERSHEY_SIMPLEX, 0.45, black, 1, cv::LINE_AA);
  }
  cv::rectangle(canvas, {kMargin, kMargin}, {kSize - kMargin, kSize - kMargin}, black, 1);

  // Translucent dots so density shows where points pile up.
  cv::Mat dots = canvas.clone();
  const double* xy = p.data_ptr<double>();
  for (int64_t i = 0; i < p.size(0); ++i) cv::circle(dots, to_pixel(xy[2 * i], xy[2 * i + 1]), 2, cv::Scalar(180, 90, 20), cv::FILLED, cv::LINE_AA);
  cv::addWeighted(dots, 0.6, canvas, 0.4, 0, canvas);
  const double* mk = m.data_ptr<double>();
  for (int64_t k = 0; k < m.size(0); ++k)
    cv::drawMarker(canvas, to_pixel(mk[2 * k], mk[2 * k + 1]), cv::Scalar(30, 30, 220), cv::MARKER_CROSS, 18, 2, cv::LINE_AA);
  cv::putText(canvas, title, {kMargin, kMargin - 25}, cv::FONT_HERSHEY_SIMPLEX, 0.55, black, 1, cv::LINE_AA);
  write_png(path, canvas);
}

}  // namespace distillery
