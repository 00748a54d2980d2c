#include "samplers/sampling.h"

#include <torch/types.h>

#include <numeric>

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/label_policy.h"
#include "models/guidance.h"
#include "samplers/sampler.h"

namespace distillery {

ScheduleSpec resolve_schedule(const SampleRequest& request, const Denoiser& denoiser) {
  return {request.schedule, request.sigma_min.value_or(denoiser.sigma_min()), request.sigma_max.value_or(denoiser.sigma_max()),
          request.rho};
}

SampleResult draw_samples(Denoiser& denoiser, const SampleRequest& request, Progress* progress) {
  DISTILLERY_CHECK(request.num > 0, Error("the number of samples must be positive").field("--num").got(std::to_string(request.num)));
  DISTILLERY_CHECK(request.batch > 0, Error("the batch size must be positive").field("--batch").got(std::to_string(request.batch)));
  DISTILLERY_CHECK(request.first_index >= 0, Error("the first sample index must be non-negative").got(std::to_string(request.first_index)));
  const auto sampler = make_sampler(request.sampler, request.options);
  std::unique_ptr<GuidedDenoiser> guided;
  if (request.guidance != 1.0) guided = std::make_unique<GuidedDenoiser>(denoiser, request.guidance);
  Denoiser& model = guided ? static_cast<Denoiser&>(*guided) : denoiser;
  SampleResult result;
  result.sigmas = make_sigmas(resolve_schedule(request, denoiser), request.steps);
  result.nfe = sampler->nfe(request.steps);
  const auto dtype = request.float64 ? torch::kFloat64 : torch::kFloat32;

  std::vector<at::Tensor> samples, noises, labels;
  for (int64_t start = 0; start < request.num; start += request.batch) {
    std::vector<int64_t> indices(static_cast<size_t>(std::min(request.batch, request.num - start)));
    std::iota(indices.begin(), indices.end(), request.first_index + start);
    auto noise = per_sample_normal(request.seed, noise_stream::initial, indices, denoiser.sample_shape(), dtype);
    const auto label_values = labels_for(request.labels, denoiser.num_classes(), indices);
    const auto batch_labels = label_values.empty() ? at::Tensor() : torch::tensor(label_values, torch::kInt64);
    {
      torch::NoGradGuard no_grad;
      const SampleContext context{batch_labels, request.seed, indices};
      samples.push_back(sampler->run(model, noise * result.sigmas.front(), result.sigmas, context));
    }
    noises.push_back(noise);
    if (batch_labels.defined()) labels.push_back(batch_labels);
    if (progress) progress->advance(static_cast<int64_t>(indices.size()));
  }
  result.samples = torch::cat(samples);
  result.noise = torch::cat(noises);
  if (!labels.empty()) result.labels = torch::cat(labels);
  return result;
}

}  // namespace distillery
