#include "io/image.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <array>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "core/tensor_checks.h"
#include "io/atomic_file.h"
#include "io/image_codec.h"

namespace distillery {

namespace {
void write_png(const std::filesystem::path& path, const DecodedImage& image) {
  try {
    write_file_atomic(path, encode_png(image));
  } catch (Error& e) {
    throw e.file(path.string());
  }
}

// A drawing (OpenCV's BGR order, or grey) as a PNG file.
void write_png(const std::filesystem::path& path, const cv::Mat& drawing) {
  cv::Mat rgb;
  if (drawing.channels() == 3) cv::cvtColor(drawing, rgb, cv::COLOR_BGR2RGB);
  else rgb = drawing.clone();
  DecodedImage image{rgb.rows, rgb.cols, rgb.channels(), std::vector<uint8_t>(rgb.data, rgb.data + rgb.total() * rgb.elemSize())};
  write_png(path, image);
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

bool drawable_as_image(const std::vector<int64_t>& sample_shape) { return sample_shape.size() == 3 && (sample_shape[0] == 1 || sample_shape[0] == 3); }

void write_image_grid(const std::filesystem::path& path, const at::Tensor& images, int64_t columns) {
  check_shape(images, {kAnySize, kAnySize, kAnySize, kAnySize}, "images for a grid [N, C, H, W]");
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  DISTILLERY_CHECK(n > 0, Error("no images to write").file(path.string()));
  DISTILLERY_CHECK(c == 1 || c == 3, Error("image grids need 1 or 3 channels").file(path.string()).got(std::to_string(c)));
  if (columns <= 0) columns = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t rows = (n + columns - 1) / columns;
  // [rows·H, columns·W, C], padding cells black, channels last.
  auto padded = torch::zeros({rows * columns, c, h, w}, torch::kUInt8);
  padded.narrow(0, 0, n).copy_(quantize_to_uint8(images.detach().cpu()));
  auto grid = padded.reshape({rows, columns, c, h, w}).permute({0, 3, 1, 4, 2}).reshape({rows * h, columns * w, c}).contiguous();
  const auto* pixels = grid.data_ptr<uint8_t>();
  write_png(path, DecodedImage{rows * h, columns * w, c, std::vector<uint8_t>(pixels, pixels + grid.numel())});
}

namespace {

// A white canvas with a boxed plot area, grid lines and tick labels for the given ranges, and
// `legend_width` pixels right of it for a legend; `to_pixel` maps data coordinates (either axis
// on a log10 scale when asked) into the box.
class PlotFrame {
 public:
  static constexpr int kWidth = 800, kHeight = 800, kMargin = 70;

  PlotFrame(double x0, double x_span, double y0, double y_span, const std::string& title, bool log_y = false, bool log_x = false, int legend_width = 0)
      : canvas(kHeight, kWidth + legend_width, CV_8UC3, cv::Scalar(255, 255, 255)), x0_(x0), x_span_(x_span), y0_(y0), y_span_(y_span), log_x_(log_x),
        log_y_(log_y) {
    const cv::Scalar grey(200, 200, 200), black(0, 0, 0);
    const double x_step = tick_step(0, x_span, 6), y_step = tick_step(0, y_span, 6);
    for (double t = std::ceil(x0 / x_step) * x_step; t <= x0 + x_span; t += x_step) {
      const int px = axis_x(t);
      cv::line(canvas, {px, kMargin}, {px, kHeight - kMargin}, grey, 1);
      const double value = log_x ? std::pow(10.0, t) : (std::abs(t) < x_step / 2 ? 0.0 : t);
      cv::putText(canvas, fmt::format("{:.3g}", value), {px - 15, kHeight - kMargin + 22}, cv::FONT_HERSHEY_SIMPLEX, 0.45, black, 1, cv::LINE_AA);
    }
    for (double t = std::ceil(y0 / y_step) * y_step; t <= y0 + y_span; t += y_step) {
      const int py = axis_y(t);
      cv::line(canvas, {kMargin, py}, {kWidth - kMargin, py}, grey, 1);
      const double value = log_y ? std::pow(10.0, t) : (std::abs(t) < y_step / 2 ? 0.0 : t);
      cv::putText(canvas, fmt::format("{:.3g}", value), {8, py + 5}, cv::FONT_HERSHEY_SIMPLEX, 0.45, black, 1, cv::LINE_AA);
    }
    cv::rectangle(canvas, {kMargin, kMargin}, {kWidth - kMargin, kHeight - kMargin}, black, 1);
    cv::putText(canvas, title, {kMargin, kMargin - 25}, cv::FONT_HERSHEY_SIMPLEX, 0.55, black, 1, cv::LINE_AA);
  }

  cv::Point to_pixel(double x, double y) const { return {axis_x(log_x_ ? std::log10(x) : x), axis_y(log_y_ ? std::log10(y) : y)}; }

  cv::Mat canvas;

 private:
  int axis_x(double x) const { return kMargin + static_cast<int>(std::lround((x - x0_) / x_span_ * (kWidth - 2 * kMargin))); }
  int axis_y(double y) const { return kHeight - kMargin - static_cast<int>(std::lround((y - y0_) / y_span_ * (kHeight - 2 * kMargin))); }

  double x0_, x_span_, y0_, y_span_;
  bool log_x_, log_y_;
};

}  // namespace

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
  PlotFrame frame(cx - span / 2, span, cy - span / 2, span, title);
  auto& canvas = frame.canvas;

  // Translucent dots so density shows where points pile up.
  cv::Mat dots = canvas.clone();
  const double* xy = p.data_ptr<double>();
  for (int64_t i = 0; i < p.size(0); ++i) cv::circle(dots, frame.to_pixel(xy[2 * i], xy[2 * i + 1]), 2, cv::Scalar(180, 90, 20), cv::FILLED, cv::LINE_AA);
  cv::addWeighted(dots, 0.6, canvas, 0.4, 0, canvas);
  const double* mk = m.data_ptr<double>();
  for (int64_t k = 0; k < m.size(0); ++k)
    cv::drawMarker(canvas, frame.to_pixel(mk[2 * k], mk[2 * k + 1]), cv::Scalar(30, 30, 220), cv::MARKER_CROSS, 18, 2, cv::LINE_AA);
  write_png(path, canvas);
}

PlotExtent line_plot_extent(const std::vector<PlotSeries>& series, bool log_y, bool log_x, const std::string& source) {
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const auto& s : series) {
    DISTILLERY_CHECK(s.x.size() == s.y.size(), Error("a plotted series needs as many x as y values").file(source).field(s.name));
    for (size_t i = 0; i < s.x.size(); ++i) {
      DISTILLERY_CHECK(std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && (!log_y || s.y[i] > 0) && (!log_x || s.x[i] > 0),
                       Error("plotted values must be finite (and positive on a log scale)").file(source).field(s.name));
      const double x = log_x ? std::log10(s.x[i]) : s.x[i], y = log_y ? std::log10(s.y[i]) : s.y[i];
      x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x), y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
    }
  }
  DISTILLERY_CHECK(std::isfinite(x_lo), Error("nothing to plot").file(source));
  const double x_span = std::max(x_hi - x_lo, 1e-9) * 1.05, y_span = std::max(y_hi - y_lo, 1e-9) * 1.1;
  // Finite values whose range overflows (±1e308) would map every point to one line.
  DISTILLERY_CHECK(std::isfinite(x_span) && std::isfinite(y_span),
                   Error("the plotted values span more than a double holds").file(source)
                       .got(fmt::format("x {:g} … {:g}, y {:g} … {:g}", x_lo, x_hi, y_lo, y_hi)));
  return {x_lo, x_span, y_lo, y_span};
}

void write_line_plot(const std::filesystem::path& path, const std::vector<PlotSeries>& series, const std::string& title, bool log_y, bool log_x) {
  const auto [x_lo, x_span, y_lo, y_span] = line_plot_extent(series, log_y, log_x, path.string());
  // The legend stands beside the box, as wide as its longest name: inside it, a results plot's
  // twenty names covered the curves and ran off the canvas.
  constexpr double kLegendFont = 0.5;
  int longest_name = 0;
  for (const auto& s : series) longest_name = std::max(longest_name, cv::getTextSize(s.name, cv::FONT_HERSHEY_SIMPLEX, kLegendFont, 1, nullptr).width);
  const int legend_x = PlotFrame::kWidth - PlotFrame::kMargin + 20, legend_right = legend_x + 40 + longest_name + 20;
  PlotFrame frame(x_lo - 0.025 * x_span, x_span, y_lo - 0.05 * y_span, y_span, title, log_y, log_x, legend_right - PlotFrame::kWidth);
  // Sixteen distinguishable colours (BGR): a results plot carries a dozen methods and teacher
  // curves, and a repeated colour made two of them read as one. Past sixteen, squares mark the
  // second round.
  const std::array<cv::Scalar, 16> colours = {
      cv::Scalar(180, 119, 31), cv::Scalar(14, 127, 255), cv::Scalar(44, 160, 44),  cv::Scalar(40, 39, 214),
      cv::Scalar(189, 103, 148), cv::Scalar(75, 86, 140), cv::Scalar(194, 119, 227), cv::Scalar(127, 127, 127),
      cv::Scalar(34, 189, 188),  cv::Scalar(207, 190, 23), cv::Scalar(121, 59, 57),   cv::Scalar(57, 121, 99),
      cv::Scalar(49, 109, 140),  cv::Scalar(57, 60, 132),  cv::Scalar(115, 65, 123),  cv::Scalar(0, 0, 0)};
  for (size_t k = 0; k < series.size(); ++k) {
    const auto colour = colours[k % colours.size()];
    const bool squares = (k / colours.size()) % 2 == 1;
    const auto& s = series[k];
    const auto mark = [&](const cv::Point& point) {
      if (squares)
        cv::rectangle(frame.canvas, point - cv::Point(4, 4), point + cv::Point(4, 4), colour, cv::FILLED, cv::LINE_AA);
      else
        cv::circle(frame.canvas, point, 4, colour, cv::FILLED, cv::LINE_AA);
    };
    for (size_t i = 0; i < s.x.size(); ++i) {
      const auto point = frame.to_pixel(s.x[i], s.y[i]);
      mark(point);
      if (i > 0) cv::line(frame.canvas, frame.to_pixel(s.x[i - 1], s.y[i - 1]), point, colour, 2, cv::LINE_AA);
    }
    const int legend_y = PlotFrame::kMargin + 10 + 22 * static_cast<int>(k);
    cv::line(frame.canvas, {legend_x, legend_y - 5}, {legend_x + 30, legend_y - 5}, colour, 3, cv::LINE_AA);
    mark({legend_x + 15, legend_y - 5});
    cv::putText(frame.canvas, s.name, {legend_x + 40, legend_y}, cv::FONT_HERSHEY_SIMPLEX, kLegendFont, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  }
  write_png(path, frame.canvas);
}

}  // namespace distillery
