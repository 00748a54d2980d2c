// defines: ScheduleKind, ScheduleSpec, make_sigmas, schedule_from_name, schedule_names
// σ grids, separate from the solvers that walk them. Every grid is strictly decreasing from
// σ_max to σ_min and ends with an appended 0, so a grid for N steps has N+1 values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace distillery {

enum class ScheduleKind {
  Karras,     // (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ  (EDM eq. 5)
  UniformT,   // uniform in rectified-flow time t = σ/(1+σ)
  LogLinear,  // uniform in log σ
  // DDPM's discrete timesteps (models/precond.h), N of the 1000 spread evenly from 999 to 0 as
  // improved DDPM's respacing picks them (DiT samples on it); σ_min and σ_max are those of the
  // table, not the spec's.
  Ddpm,
};
inline constexpr int kScheduleCount = 4;

struct ScheduleSpec {
  ScheduleKind kind = ScheduleKind::Karras;
  double sigma_min = 0.002;  // last non-zero σ
  double sigma_max = 80.0;   // first σ
  double rho = 7.0;          // Karras only
};

std::vector<double> make_sigmas(const ScheduleSpec& spec, int steps);

std::string_view schedule_name(ScheduleKind kind);
ScheduleKind schedule_from_name(std::string_view name);  // Error lists the valid names
std::vector<std::string> schedule_names();

}  // namespace distillery
