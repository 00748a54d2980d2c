// defines: SamplingCliOptions, add_sampling_options
// The solver options `sample` and `record` share: one declaration, so both commands accept
// the same names, checks and defaults.
#pragma once

#include <optional>
#include <string>

#include "samplers/sampling.h"

namespace CLI { class App; }

namespace distillery {

struct SamplingCliOptions {
  std::string schedule = "karras";
  std::optional<double> sigma_min, sigma_max, rho;
  SampleRequest request;
  SampleRequest resolved() const;  // the request with the schedule options applied
};

// --sampler --steps --num --seed --batch --no-memory-check --schedule --rho --sigma-min --sigma-max --labels
// --guidance --s-churn --s-tmin --s-tmax --s-noise
void add_sampling_options(CLI::App& command, SamplingCliOptions& options);

}  // namespace distillery
