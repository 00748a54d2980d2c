// defines: SampleRequest, SampleResult, draw_samples
// Batched sampling from any denoiser with any registered solver: the noise and label of sample
// i depend only on (seed, i), so results do not depend on the batch size.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/denoiser.h"
#include "samplers/sampler.h"
#include "samplers/schedule.h"

namespace distillery {

class Progress;

struct SampleRequest {
  std::string sampler = "heun";
  int steps = 18;
  ScheduleKind schedule = ScheduleKind::Karras;
  double rho = 7.0;
  std::optional<double> sigma_min, sigma_max;  // default: the denoiser's range
  uint64_t seed = 0;
  int64_t first_index = 0;     // samples first_index .. first_index + num − 1
  int64_t num = 64;
  int64_t batch = 256;
  std::string labels;          // label policy (data/label_policy.h); empty for unconditional
  double guidance = 1.0;       // classifier-free guidance scale w (1: plain conditional)
  SamplerOptions options;      // stochastic solvers' churn
  bool float64 = false;        // integrate in float64 (tests, references)
};

struct SampleResult {
  at::Tensor samples;          // [num, *shape]
  at::Tensor noise;            // [num, *shape], unit variance; the initial state is sigmas[0]·noise
  at::Tensor labels;           // [num] int64, undefined when unconditional
  std::vector<double> sigmas;  // the grid used, steps+1 values ending at 0
  int64_t nfe = 0;             // denoiser evaluations per sample (guidance batches two per evaluation)
};

// The request's schedule with the denoiser's σ range where the request gives none.
ScheduleSpec resolve_schedule(const SampleRequest& request, const Denoiser& denoiser);

SampleResult draw_samples(Denoiser& denoiser, const SampleRequest& request, Progress* progress = nullptr);

}  // namespace distillery
