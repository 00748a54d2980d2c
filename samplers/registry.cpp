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
  DISTILLERY_CHECK(step >= 0 && static_cast<uint64_t>(step) < noise_stream::max_solver_steps,
                   Error("stochastic solvers draw fresh noise for at most 999 steps").got(std::to_string(step + 1)).hint("use fewer --steps"));
  const auto shape = like.sizes().slice(1).vec();
  return per_sample_normal(seed, noise_stream::sampler_step + static_cast<uint64_t>(step), indices, shape, like.options());
}

StepResult Sampler::step(Denoiser&, const at::Tensor&, const RowStep&, const SampleContext&) const {
  throw Error(fmt::format("the {} solver has no per-row step", name())).expected("euler, heun, ddim or dpmpp-2m");
}

StepResult OneEvaluationPerStepSampler::step(Denoiser& denoiser, const at::Tensor& x, const RowStep& rows, const SampleContext& context) const {
  return step_at(-1, denoiser, x, rows, context);
}

StepResult OneEvaluationPerStepSampler::step_at(int64_t i, Denoiser& denoiser, const at::Tensor& x, const RowStep& rows, const SampleContext& context) const {
  const auto n = static_cast<size_t>(x.size(0));
  DISTILLERY_CHECK(rows.sigma_from.size() == n && rows.sigma_to.size() == n && (rows.sigma_previous.empty() || rows.sigma_previous.size() == n),
                   Error("a per-row step needs one σ pair per row").expected(std::to_string(n))
                       .got(fmt::format("{} σ_from, {} σ_to, {} previous σ", rows.sigma_from.size(), rows.sigma_to.size(), rows.sigma_previous.size())));
  auto denoised = denoise_rows(denoiser, x, rows.sigma_from, context.labels);
  auto next = advance(x, Step{i, rows, denoised, context});
  return {std::move(next), std::move(denoised)};
}

at::Tensor OneEvaluationPerStepSampler::run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                                            SamplerObserver* observer) const {
  const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
  const auto n = static_cast<size_t>(x.size(0));
  at::Tensor previous_denoised;
  for (int64_t i = 0; i < steps; ++i) {
    const RowStep rows{std::vector<double>(n, sigmas[i]), std::vector<double>(n, sigmas[i + 1]), std::vector<double>(n, i > 0 ? sigmas[i - 1] : 0.0),
                       previous_denoised};
    auto result = step_at(i, denoiser, x, rows, context);
    if (observer) observer->on_state(i, sigmas[i], x, result.denoised);
    x = std::move(result.x);
    previous_denoised = std::move(result.denoised);
  }
  if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
  return x;
}

at::Tensor denoise_at(Denoiser& denoiser, const at::Tensor& x, double sigma, const at::Tensor& labels) {
  return denoiser.denoise(x, torch::full({x.size(0)}, sigma, x.options()), labels);
}

at::Tensor per_row(const std::vector<double>& values, const at::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = static_cast<int64_t>(values.size());
  auto host = torch::from_blob(const_cast<double*>(values.data()), {shape[0]}, torch::kFloat64);
  return host.to(like.options(), /*non_blocking=*/false, /*copy=*/true).view(shape);
}

at::Tensor denoise_rows(Denoiser& denoiser, const at::Tensor& x, const std::vector<double>& sigma, const at::Tensor& labels) {
  return denoiser.denoise(x, per_row(sigma, x).flatten(), labels);
}

at::Tensor jump(Denoiser& denoiser, const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  const auto kept = (sigma_target / sigma).to(x.scalar_type()).view(shape);
  return kept * x + (1 - kept) * denoiser.denoise_toward(x, sigma, sigma_target, labels);
}

}  // namespace distillery
