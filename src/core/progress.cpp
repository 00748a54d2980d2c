#include "core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace distillery {

namespace {
using Clock = std::chrono::steady_clock;
// A terminal is redrawn often; a log file gets a line only this often.
constexpr double kTerminalRefreshSeconds = 0.1;
constexpr double kLogLineSeconds = 10.0;
constexpr int kBarWidth = 30;
}  // namespace

Progress::Progress(std::string label, int64_t total, std::string unit, std::FILE* stream, int64_t already_done)
    : label_(std::move(label)), unit_(std::move(unit)), total_(std::max<int64_t>(total, 0)), done_(already_done), initial_(already_done),
      stream_(stream), interactive_(stream != nullptr && isatty(fileno(stream))),
      start_(Clock::now()), last_render_(start_) {}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  done_ += n;
  const double since = std::chrono::duration<double>(Clock::now() - last_render_).count();
  if (since >= (interactive_ ? kTerminalRefreshSeconds : kLogLineSeconds)) render(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  render(true);
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{:02d}:{:02d}", s / 60, s % 60);
}

std::string Progress::format_rate(double per_second, const std::string& unit) {
  if (!std::isfinite(per_second) || per_second <= 0) return fmt::format("-- {}/s", unit);
  if (per_second < 1.0) return fmt::format("{:.2f} s/{}", 1.0 / per_second, unit);
  return fmt::format("{:.1f} {}/s", per_second, unit);
}

void Progress::render(bool final_line) {
  if (stream_ == nullptr) return;
  last_render_ = Clock::now();
  const double elapsed = std::chrono::duration<double>(last_render_ - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_ - initial_) / elapsed : 0.0;
  const double fraction = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_)) : 1.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : NAN;
  const std::string timing = final_line
                                 ? fmt::format("{} in {}", format_rate(rate, unit_), format_duration(elapsed))
                                 : fmt::format("{} ETA {}", format_rate(rate, unit_), format_duration(eta));
  if (interactive_) {
    const int filled = static_cast<int>(fraction * kBarWidth);
    fmt::print(stream_, "\r{} [{}{}] {}/{} {:3.0f}% {}\033[K{}", label_, std::string(filled, '#'),
               std::string(kBarWidth - filled, ' '), done_, total_, 100 * fraction, timing,
               final_line ? "\n" : "");
  } else {
    fmt::print(stream_, "{}: {}/{} {:.0f}% {}\n", label_, done_, total_, 100 * fraction, timing);
  }
  std::fflush(stream_);
}

}  // namespace distillery
