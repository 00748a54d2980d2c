#include "samplers/sampling.h"

#include <fmt/format.h>
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

BatchSampler::BatchSampler(Denoiser& denoiser, const SampleRequest& request)
    : denoiser_(denoiser), request_(request), sampler_(make_sampler(request.sampler, request.options)), model_(&denoiser) {
  if (request.guidance != 1.0) {
    guided_ = std::make_unique<GuidedDenoiser>(denoiser, request.guidance);
    model_ = guided_.get();
  }
  if (request.sigmas.empty()) {
    sigmas_ = make_sigmas(resolve_schedule(request, denoiser), request.steps);
  } else {
    for (size_t i = 0; i < request.sigmas.size(); ++i)
      DISTILLERY_CHECK(request.sigmas[i] > 0 && (i == 0 || request.sigmas[i] < request.sigmas[i - 1]),
                       Error("an explicit σ grid must be positive and strictly decreasing").field("sigmas").got(std::to_string(request.sigmas[i])));
    sigmas_ = request.sigmas;
    sigmas_.push_back(0.0);
  }
  nfe_ = sampler_->nfe(static_cast<int64_t>(sigmas_.size()) - 1);
}

BatchSampler::~BatchSampler() = default;

BatchSampler::Batch BatchSampler::run(const std::vector<int64_t>& indices, SamplerObserver* observer) {
  const auto options = torch::TensorOptions(request_.float64 ? torch::kFloat64 : torch::kFloat32).device(denoiser_.device());
  Batch batch;
  batch.noise = per_sample_normal(request_.seed, noise_stream::initial, indices, denoiser_.sample_shape(), options);
  const auto label_values = labels_for(request_.labels, denoiser_.num_classes(), indices);
  if (!label_values.empty()) batch.labels = torch::tensor(label_values, torch::kInt64).to(options.device());
  torch::NoGradGuard no_grad;
  const SampleContext context{batch.labels, request_.seed, indices};
  batch.samples = sampler_->run(*model_, batch.noise * sigmas_.front(), sigmas_, context, observer);
  // A non-finite sample would be written, or quantised and measured, as if it were an image.
  const auto nonfinite = torch::logical_not(torch::isfinite(batch.samples)).sum().item<int64_t>();
  DISTILLERY_CHECK(nonfinite == 0, Error(fmt::format("sampling produced {} non-finite values", nonfinite))
                                       .got(fmt::format("samples {} to {} of seed {}", indices.front(), indices.back(), request_.seed))
                                       .hint("the model's weights or its output diverge (a guidance scale too large, a σ range the model was not trained on)"));
  return batch;
}

SampleResult draw_samples(Denoiser& denoiser, const SampleRequest& request, Progress* progress) {
  DISTILLERY_CHECK(request.num > 0, Error("the number of samples must be positive").field("--num").got(std::to_string(request.num)));
  DISTILLERY_CHECK(request.batch > 0, Error("the batch size must be positive").field("--batch").got(std::to_string(request.batch)));
  DISTILLERY_CHECK(request.first_index >= 0, Error("the first sample index must be non-negative").got(std::to_string(request.first_index)));
  BatchSampler sampler(denoiser, request);
  SampleResult result;
  result.sigmas = sampler.sigmas();
  result.nfe = sampler.nfe();
  std::vector<at::Tensor> samples, noises, labels;
  for (int64_t start = 0; start < request.num; start += request.batch) {
    std::vector<int64_t> indices(static_cast<size_t>(std::min(request.batch, request.num - start)));
    std::iota(indices.begin(), indices.end(), request.first_index + start);
    auto batch = sampler.run(indices);
    samples.push_back(batch.samples);
    noises.push_back(batch.noise);
    if (batch.labels.defined()) labels.push_back(batch.labels);
    if (progress) progress->advance(static_cast<int64_t>(indices.size()));
  }
  result.samples = torch::cat(samples);
  result.noise = torch::cat(noises);
  if (!labels.empty()) result.labels = torch::cat(labels);
  return result;
}

}  // namespace distillery
