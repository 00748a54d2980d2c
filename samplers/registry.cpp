#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <array>

#include "core/error.h"
#include "core/rng.h"
#include "samplers/sampler.h"

namespace distillery {

namespace {
struct SamplerEntry {
  std::string_view name;
  std::unique_ptr<Sampler> (*make)(const SamplerOptions&);
};
constexpr std::array<SamplerEntry, 6> kSamplers = {{
    {"euler", make_euler_sampler},
    {"heun", make_heun_sampler},
    {"dpmpp-2m", make_dpmpp_2m_sampler},
    {"ddim", make_ddim_sampler},
    {"edm-stochastic", make_edm_stochastic_sampler},
    {"multistep", make_multistep_sampler},
}};
}  // namespace

std::vector<std::string> sampler_names() {
  std::vector<std::string> names;
  for (const auto& entry : kSamplers) names.emplace_back(entry.name);
  return names;
}

std::unique_ptr<Sampler> make_sampler(std::string_view name, const SamplerOptions& options) {
  for (const auto& entry : kSamplers)
    if (entry.name == name) return entry.make(options);
  throw Error(fmt::format("unknown sampler '{}'", name)).field("sampler").expected(fmt::format("one of: {}", fmt::join(sampler_names(), ", ")));
}

at::Tensor SampleContext::fresh_noise(int64_t step, const at::Tensor& like) const {
  DISTILLERY_CHECK(static_cast<int64_t>(indices.size()) == like.size(0),
                   Error("a stochastic solver needs the sample index of every batch row").expected(std::to_string(like.size(0)))
                       .got(std::to_string(indices.size())));
  const auto shape = like.sizes().slice(1).vec();
  return per_sample_normal(seed, noise_stream::sampler_step + static_cast<uint64_t>(step), indices, shape, like.scalar_type()).to(like.device());
}

at::Tensor OneEvaluationPerStepSampler::run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                                            SamplerObserver* observer) const {
  const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
  at::Tensor previous_denoised;
  for (int64_t i = 0; i < steps; ++i) {
    auto denoised = denoise_at(denoiser, x, sigmas[i], context.labels);
    if (observer) observer->on_state(i, sigmas[i], x, denoised);
    x = advance(x, Step{i, sigmas[i], sigmas[i + 1], i > 0 ? sigmas[i - 1] : 0.0, denoised, previous_denoised, context});
    previous_denoised = std::move(denoised);
  }
  if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
  return x;
}

at::Tensor denoise_at(Denoiser& denoiser, const at::Tensor& x, double sigma, const at::Tensor& labels) {
  return denoiser.denoise(x, torch::full({x.size(0)}, sigma, x.options()), labels);
}

}  // namespace distillery
