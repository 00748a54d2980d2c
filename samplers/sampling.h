// defines: SampleRequest, SampleResult, BatchSampler, draw_samples, resolve_schedule
// Batched sampling from any denoiser with any registered solver: the noise and label of sample
// i depend only on (seed, i), so results do not depend on the batch size.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/memory_check.h"
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
  std::vector<double> sigmas;  // an explicit decreasing grid without the final 0 (students); replaces schedule and steps
  uint64_t seed = 0;
  int64_t first_index = 0;     // samples first_index .. first_index + num − 1
  int64_t num = 64;
  int64_t batch = 256;
  std::string labels;          // label policy (data/label_policy.h); empty for unconditional
  double guidance = 1.0;       // classifier-free guidance scale w (1: plain conditional)
  SamplerOptions options;      // stochastic solvers' churn
  bool float64 = false;        // integrate in float64 (tests, references)
  bool check_memory = true;    // refuse a num and batch whose estimate exceeds the free memory
};

// On the denoiser's device.
struct SampleResult {
  at::Tensor samples;          // [num, *shape]
  at::Tensor noise;            // [num, *shape], unit variance; the initial state is sigmas[0]·noise
  at::Tensor labels;           // [num] int64, undefined when unconditional
  std::vector<double> sigmas;  // the grid used, steps+1 values ending at 0
  int64_t nfe = 0;             // denoiser evaluations per sample (guidance batches two per evaluation)
};

// The request's schedule with the denoiser's σ range where the request gives none.
ScheduleSpec resolve_schedule(const SampleRequest& request, const Denoiser& denoiser);

class GuidedDenoiser;

// The request's solver, σ grid, guidance and label policy, applied to any set of sample
// indices: what draw_samples does for 0..num−1, a trajectory recorder does shard by shard.
class BatchSampler {
 public:
  BatchSampler(Denoiser& denoiser, const SampleRequest& request);
  ~BatchSampler();

  struct Batch {
    at::Tensor samples;  // [n, *shape]
    at::Tensor noise;    // [n, *shape], unit variance
    at::Tensor labels;   // [n] int64, undefined when unconditional
  };
  // The observer sees every state of the batch's trajectories.
  Batch run(const std::vector<int64_t>& indices, SamplerObserver* observer = nullptr);

  const std::vector<double>& sigmas() const { return sigmas_; }
  int64_t nfe() const { return nfe_; }
  // The denoiser the solver evaluates (the guided one when guidance ≠ 1).
  Denoiser& model() { return *model_; }
  // What running batches of `batch` samples takes on the denoiser's device: one network
  // evaluation, measured on up to sixteen samples and scaled, and the solver's states. Call it
  // before sampling, while little freed memory waits for reuse.
  std::vector<MemoryPart> working_memory(int64_t batch);
  // Bytes of one sample in the integration's precision.
  double sample_bytes() const;

 private:
  Denoiser& denoiser_;
  SampleRequest request_;
  std::unique_ptr<Sampler> sampler_;
  std::unique_ptr<GuidedDenoiser> guided_;
  Denoiser* model_;
  std::vector<double> sigmas_;
  int64_t nfe_;
};

SampleResult draw_samples(Denoiser& denoiser, const SampleRequest& request, Progress* progress = nullptr);

}  // namespace distillery
