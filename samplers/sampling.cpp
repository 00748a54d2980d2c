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

double BatchSampler::sample_bytes() const {
  const auto shape = denoiser_.sample_shape();
  const double elements = std::accumulate(shape.begin(), shape.end(), 1.0, std::multiplies<>());
  return elements * (request_.float64 ? 8 : 4);
}

std::vector<MemoryPart> BatchSampler::working_memory(int64_t batch) {
  const auto options = torch::TensorOptions(request_.float64 ? torch::kFloat64 : torch::kFloat32).device(denoiser_.device());
  const auto evaluation_bytes = [&](int64_t n) {
    std::vector<int64_t> shape = denoiser_.sample_shape();
    shape.insert(shape.begin(), n);
    const auto x = torch::zeros(shape, options);
    const auto sigma = torch::full({n}, sigmas_.front(), options);
    const auto labels = denoiser_.num_classes() > 0 ? torch::zeros({n}, options.dtype(torch::kInt64)) : at::Tensor();
    torch::NoGradGuard no_grad;
    return static_cast<double>(working_bytes(denoiser_.device(), [&] { model_->denoise(x, sigma, labels); }));
  };
  // One probe only: a second would reuse the memory the first freed, and measure nothing.
  const int64_t probe = std::min<int64_t>(batch, 16);
  const double per_sample = evaluation_bytes(probe) / static_cast<double>(probe);
  // Heun, the widest solver, holds the state, its noise, two derivatives, the next state and
  // the denoised output at once.
  constexpr int kSolverStates = 6;
  return {{fmt::format("network evaluations of {} sample(s) ({} per sample, measured)", batch, human_bytes(per_sample)),
           per_sample * static_cast<double>(batch)},
          {fmt::format("solver states: {} × {} sample(s) × {}", kSolverStates, batch, human_bytes(sample_bytes())),
           kSolverStates * static_cast<double>(batch) * sample_bytes()}};
}

SampleResult draw_samples(Denoiser& denoiser, const SampleRequest& request, Progress* progress) {
  DISTILLERY_CHECK(request.num > 0, Error("the number of samples must be positive").field("--num").got(std::to_string(request.num)));
  DISTILLERY_CHECK(request.batch > 0, Error("the batch size must be positive").field("--batch").got(std::to_string(request.batch)));
  DISTILLERY_CHECK(request.first_index >= 0, Error("the first sample index must be non-negative").got(std::to_string(request.first_index)));
  BatchSampler sampler(denoiser, request);
  const int64_t batch_size = std::min(request.batch, request.num);
  auto memory = sampler.working_memory(batch_size);
  memory.push_back({fmt::format("the results: samples and noise, 2 × {} × {}", request.num, human_bytes(sampler.sample_bytes())),
                    2.0 * static_cast<double>(request.num) * sampler.sample_bytes()});
  require_memory(memory, denoiser.device(), request.check_memory, "--num or --batch");
  SampleResult result;
  result.sigmas = sampler.sigmas();
  result.nfe = sampler.nfe();
  // Filled batch by batch, so that the results are held once, not once more while concatenated.
  for (int64_t start = 0; start < request.num; start += request.batch) {
    std::vector<int64_t> indices(static_cast<size_t>(std::min(request.batch, request.num - start)));
    std::iota(indices.begin(), indices.end(), request.first_index + start);
    auto batch = sampler.run(indices);
    if (start == 0) {
      const auto whole = [&](const at::Tensor& like) {
        auto shape = like.sizes().vec();
        shape[0] = request.num;
        return at::empty(shape, like.options());
      };
      result.samples = whole(batch.samples);
      result.noise = whole(batch.noise);
      if (batch.labels.defined()) result.labels = whole(batch.labels);
    }
    const auto rows = static_cast<int64_t>(indices.size());
    result.samples.narrow(0, start, rows).copy_(batch.samples);
    result.noise.narrow(0, start, rows).copy_(batch.noise);
    if (batch.labels.defined()) result.labels.narrow(0, start, rows).copy_(batch.labels);
    if (progress) progress->advance(rows);
  }
  return result;
}

}  // namespace distillery
