#include "samplers/schedule.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"
#include "models/precond.h"

namespace distillery {

namespace {
constexpr std::array<std::string_view, kScheduleCount> kScheduleNames = {"karras", "uniform-t", "loglinear", "ddpm"};
static_assert(static_cast<int>(ScheduleKind::Ddpm) + 1 == kScheduleCount);

// Improved DDPM's space_timesteps for one section: indices round(k·999/(N−1)), the stride
// accumulated and rounded half to even as Python does, largest first.
std::vector<double> ddpm_respaced_sigmas(int steps) {
  DISTILLERY_CHECK(steps >= 2 && steps <= kDdpmSteps, Error("the ddpm schedule needs at least 2 steps and at most one per DDPM timestep")
                                                          .field("steps").expected(fmt::format("2 to {}", kDdpmSteps)).got(std::to_string(steps)));
  const double stride = static_cast<double>(kDdpmSteps - 1) / (steps - 1);
  std::vector<double> sigmas;
  double position = 0;
  for (int i = 0; i < steps; ++i, position += stride) sigmas.push_back(ddpm_sigmas().at(static_cast<size_t>(std::nearbyint(position))));
  std::reverse(sigmas.begin(), sigmas.end());
  sigmas.push_back(0.0);
  return sigmas;
}
}  // namespace
std::string_view schedule_name(ScheduleKind kind) { return kScheduleNames.at(static_cast<size_t>(kind)); }

ScheduleKind schedule_from_name(std::string_view name) {
  for (size_t i = 0; i < kScheduleNames.size(); ++i)
    if (kScheduleNames[i] == name) return static_cast<ScheduleKind>(i);
  throw Error(fmt::format("unknown schedule '{}'", name)).field("schedule").expected(fmt::format("one of: {}", fmt::join(kScheduleNames, ", ")));
}

std::vector<std::string> schedule_names() { return {kScheduleNames.begin(), kScheduleNames.end()}; }

std::vector<double> make_sigmas(const ScheduleSpec& spec, int steps) {
  if (spec.kind == ScheduleKind::Ddpm) return ddpm_respaced_sigmas(steps);
  DISTILLERY_CHECK(steps >= 1, Error("the number of sampling steps must be at least 1").field("steps").got(std::to_string(steps)));
  DISTILLERY_CHECK(spec.sigma_min > 0 && spec.sigma_max > spec.sigma_min,
                   Error("invalid σ range").expected("0 < sigma_min < sigma_max").got(fmt::format("sigma_min {}, sigma_max {}", spec.sigma_min, spec.sigma_max)));
  DISTILLERY_CHECK(spec.kind != ScheduleKind::Karras || spec.rho > 0, Error("rho must be positive").field("rho").got(std::to_string(spec.rho)));
  // The preconditioning squares σ in the samples' float32, which overflows past about 1.8e19.
  constexpr double kLargestSigma = 1e18;
  DISTILLERY_CHECK(spec.sigma_max <= kLargestSigma, Error("sigma_max is too large for float32 samples").field("sigma_max")
                                                        .expected(fmt::format("at most {:g}", kLargestSigma)).got(fmt::format("{:g}", spec.sigma_max)));
  std::vector<double> sigmas(static_cast<size_t>(steps) + 1, 0.0);
  // With one step there is only σ_max before the final 0.
  auto fraction = [steps](int i) { return steps == 1 ? 0.0 : static_cast<double>(i) / (steps - 1); };
  for (int i = 0; i < steps; ++i) {
    const double u = fraction(i);
    switch (spec.kind) {
      case ScheduleKind::Karras: {
        const double a = std::pow(spec.sigma_max, 1.0 / spec.rho), b = std::pow(spec.sigma_min, 1.0 / spec.rho);
        sigmas[i] = std::pow(a + u * (b - a), spec.rho);
        break;
      }
      case ScheduleKind::UniformT: {
        const double t0 = rf_time_from_sigma(spec.sigma_max), t1 = rf_time_from_sigma(spec.sigma_min);
        sigmas[i] = sigma_from_rf_time(t0 + u * (t1 - t0));
        break;
      }
      case ScheduleKind::LogLinear:
        sigmas[i] = std::exp(std::log(spec.sigma_max) + u * (std::log(spec.sigma_min) - std::log(spec.sigma_max)));
        break;
      case ScheduleKind::Ddpm:
        break;
    }
  }
  // An extreme ρ rounds σ^(1/ρ) to 1 in double precision (beyond about 1e13) or overflows it
  // (near 0), and the grid's ends and order with it: refuse it rather than sample on that grid.
  bool ordered = std::isfinite(sigmas.front());
  for (int i = 1; i < steps; ++i) ordered = ordered && sigmas[static_cast<size_t>(i)] < sigmas[static_cast<size_t>(i) - 1];
  const auto near = [](double value, double expected) { return std::abs(value - expected) <= 1e-6 * expected; };
  DISTILLERY_CHECK(ordered && near(sigmas.front(), spec.sigma_max) && (steps == 1 || near(sigmas[static_cast<size_t>(steps) - 1], spec.sigma_min)),
                   Error("the σ schedule cannot be computed in double precision").field(spec.kind == ScheduleKind::Karras ? "rho" : "sigma_max")
                       .expected(fmt::format("a decreasing grid from σ_max {} down to σ_min {}", spec.sigma_max, spec.sigma_min))
                       .got(fmt::format("{} … {}", sigmas.front(), sigmas[static_cast<size_t>(steps) - 1]))
                       .hint(spec.kind == ScheduleKind::Karras ? fmt::format("ρ is {}: use one between about 0.1 and 100 (EDM samples with 7)", spec.rho)
                                                               : "use σ values of the teacher's range"));
  return sigmas;
}

}  // namespace distillery
