#include "cli/sampling_options.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <utility>

#include "cli/device_option.h"
#include "cli/number_checks.h"
#include "core/error.h"
#include "samplers/sampler.h"
#include "samplers/schedule.h"

namespace distillery {

SampleRequest SamplingCliOptions::resolved() const {
  auto r = request;
  r.schedule = schedule_from_name(schedule);
  // DDPM's respaced timesteps are the teacher's own: these options would be ignored in silence.
  for (const auto& [option, given] : {std::pair{"--sigma-min", sigma_min.has_value()}, {"--sigma-max", sigma_max.has_value()}, {"--rho", rho.has_value()}})
    DISTILLERY_CHECK(r.schedule != ScheduleKind::Ddpm || !given, Error("--schedule ddpm walks the teacher's own DDPM timesteps, which this option does not change")
                                                                     .field(option).hint("leave it out, or choose another --schedule"));
  r.sigma_min = sigma_min;
  r.sigma_max = sigma_max;
  if (rho) r.rho = *rho;
  return r;
}

void add_sampling_options(CLI::App& cmd, SamplingCliOptions& options) {
  auto& r = options.request;
  cmd.add_option("--sampler", r.sampler, "solver")->check(CLI::IsMember(sampler_names()))->capture_default_str();
  cmd.add_option("--steps", r.steps, "solver steps (σ grid of steps+1 values ending at 0)")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd.add_option("--num", r.num, "number of samples")->check(count_check())->capture_default_str();
  cmd.add_option("--seed", r.seed, "seed; sample i's noise depends only on (seed, i)")->check(seed_check())->capture_default_str();
  cmd.add_option("--batch", r.batch, "samples per batch (does not change results)")->check(count_check())->capture_default_str();
  add_memory_check_option(cmd, r.check_memory);
  cmd.add_option("--schedule", options.schedule, "σ schedule (ddpm: a discrete DDPM teacher's own timesteps, as DiT samples)")->check(CLI::IsMember(schedule_names()))->capture_default_str();
  cmd.add_option("--rho", options.rho, fmt::format("Karras schedule exponent ρ (default {})", SampleRequest{}.rho))->check(positive_number_check());
  cmd.add_option("--sigma-min", options.sigma_min, "smallest non-zero σ (default: the teacher's)")->check(positive_number_check());
  cmd.add_option("--sigma-max", options.sigma_max, "starting σ (default: the teacher's)")->check(positive_number_check());
  cmd.add_option("--labels", r.labels, "conditional teachers: all | none (the unconditional branch) | CLASS | C1,C2,... (default all)");
  cmd.add_option("--guidance", r.guidance, "classifier-free guidance scale (conditional teachers; 1 = none)")->check(finite_number_check())->capture_default_str();
  auto& churn = r.options;
  cmd.add_option("--s-churn", churn.s_churn, "edm-stochastic: total churn S_churn")->check(non_negative_number_check())->capture_default_str();
  cmd.add_option("--s-tmin", churn.s_tmin, "edm-stochastic: churn only for σ ≥ S_tmin")->check(non_negative_number_check())->capture_default_str();
  cmd.add_option("--s-tmax", churn.s_tmax, "edm-stochastic: churn only for σ ≤ S_tmax")->check(non_negative_number_check())->capture_default_str();
  cmd.add_option("--s-noise", churn.s_noise, "edm-stochastic: noise scale S_noise")->check(non_negative_number_check())->capture_default_str();
}

}  // namespace distillery
