#include "models/precond.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <array>
#include <cmath>
#include <mutex>
#include <unordered_map>

#include "core/error.h"

namespace distillery {

namespace {
constexpr std::array<std::string_view, kParameterizationCount> kParameterizationNames = {"edm", "vp", "ve", "rectified-flow", "consistency", "trigflow", "ddpm"};
static_assert(static_cast<int>(Parameterization::DDPM) + 1 == kParameterizationCount);

// Song et al. 2021 VP SDE constants as used by EDM's VPPrecond.
constexpr double kBetaD = 19.9, kBetaMin = 0.1, kVpTimeScale = 1000 - 1;

// x: [N, ...]; a per-sample coefficient [N] broadcast over the sample dimensions.
at::Tensor per_sample(const at::Tensor& coefficient, const at::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = coefficient.size(0);
  return coefficient.reshape(shape);
}
}  // namespace

std::string_view parameterization_name(Parameterization p) { return kParameterizationNames.at(static_cast<size_t>(p)); }

Parameterization parameterization_from_name(std::string_view name) {
  for (size_t i = 0; i < kParameterizationNames.size(); ++i)
    if (kParameterizationNames[i] == name) return static_cast<Parameterization>(i);
  throw Error(fmt::format("unknown parameterization '{}'", name)).expected(fmt::format("one of: {}", fmt::join(kParameterizationNames, ", ")));
}

double rf_time_from_sigma(double sigma) { return sigma / (1.0 + sigma); }
double sigma_from_rf_time(double t) { return t / (1.0 - t); }
double sigma_from_vp_time(double t) { return std::sqrt(std::expm1(0.5 * kBetaD * t * t + kBetaMin * t)); }
double trigflow_time_from_sigma(double sigma, double sigma_data) { return std::atan(sigma / sigma_data); }
double sigma_from_trigflow_time(double t, double sigma_data) { return sigma_data * std::tan(t); }
double vp_time_from_sigma(double sigma) {
  return (std::sqrt(kBetaMin * kBetaMin + 2.0 * kBetaD * std::log1p(sigma * sigma)) - kBetaMin) / kBetaD;
}

const std::vector<double>& ddpm_sigmas() {
  static const std::vector<double> sigmas = [] {
    // As numpy's linspace and cumprod build it, so that σ_j equals DiT's to the last bit.
    constexpr double beta_start = 1e-4, beta_end = 0.02, step = (beta_end - beta_start) / (kDdpmSteps - 1);
    std::vector<double> out;
    double alpha_bar = 1.0;
    for (int j = 0; j < kDdpmSteps; ++j) {
      alpha_bar *= 1.0 - (j == kDdpmSteps - 1 ? beta_end : j * step + beta_start);
      out.push_back(std::sqrt(1.0 / alpha_bar - 1.0));
    }
    return out;
  }();
  return sigmas;
}

namespace {
// log σ_j in float64 on `device`, copied there once: every evaluation of a DDPM network reads
// it, and a copy per call would sit on the sampling path (and cannot be captured in a CUDA graph).
at::Tensor ddpm_log_sigma_table(const c10::Device& device) {
  static std::mutex mutex;
  static std::unordered_map<c10::Device, at::Tensor> tables;
  const std::lock_guard lock(mutex);
  auto& table = tables[device];
  if (!table.defined()) {
    std::vector<double> log_sigmas;
    for (double s : ddpm_sigmas()) log_sigmas.push_back(std::log(s));
    table = torch::tensor(log_sigmas, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  }
  return table;
}
}  // namespace

at::Tensor ddpm_timestep(const at::Tensor& sigma) {
  // In float64: σ_j in float32 then lands within 1e-5 of j even where the table is densest.
  const auto table = ddpm_log_sigma_table(sigma.device());
  const auto log_sigma = sigma.to(torch::kFloat64).log();
  const auto upper = torch::searchsorted(table, log_sigma.detach()).clamp(1, kDdpmSteps - 1), lower = upper - 1;
  const auto low = table.index({lower}), high = table.index({upper});
  return (lower.to(torch::kFloat64) + (log_sigma - low) / (high - low)).to(sigma.scalar_type());
}

PrecondCoefficients precondition(Parameterization p, const at::Tensor& sigma, double sigma_data, double sigma_min) {
  const auto one = torch::ones_like(sigma);
  switch (p) {
    case Parameterization::EDM: {
      const auto sd2 = sigma_data * sigma_data;
      const auto norm = (sigma * sigma + sd2).sqrt();
      return {sd2 / (sigma * sigma + sd2), sigma * sigma_data / norm, 1.0 / norm, sigma.log() / 4.0};
    }
    case Parameterization::VP: {
      const auto t = (kBetaMin * kBetaMin + 2.0 * kBetaD * (sigma * sigma).log1p()).sqrt().sub(kBetaMin).div(kBetaD);
      return {one, -sigma, 1.0 / (sigma * sigma + 1.0).sqrt(), kVpTimeScale * t};
    }
    case Parameterization::VE:
      return {one, sigma, one, (0.5 * sigma).log()};
    case Parameterization::RectifiedFlow: {
      // D = x_t − t·v with x_t = x/(1+σ), t = σ/(1+σ).
      const auto scale = 1.0 / (1.0 + sigma);
      return {scale, -sigma * scale, scale, sigma * scale};
    }
    case Parameterization::Consistency: {
      const auto sd2 = sigma_data * sigma_data;
      const auto norm = (sigma * sigma + sd2).sqrt();
      return {sd2 / ((sigma - sigma_min).square() + sd2), (sigma - sigma_min) * sigma_data / norm, 1.0 / norm, sigma.log() / 4.0};
    }
    case Parameterization::TrigFlow: {
      // With x_t = cos(t)·x: D = cos²(t)·x − sin(t)·σ_d·F(cos(t)·x/σ_d; t).
      const auto t = (sigma / sigma_data).atan();
      const auto cos = t.cos();
      return {cos.square(), -sigma_data * t.sin(), cos / sigma_data, t};
    }
    case Parameterization::DDPM:
      return {one, -sigma, 1.0 / (sigma * sigma + 1.0).sqrt(), ddpm_timestep(sigma)};
  }
  throw Error("unhandled parameterization");
}

PreconditionedDenoiser::PreconditionedDenoiser(Parameterization p, RawNetwork network, Info info)
    : parameterization_(p), network_(std::move(network)), info_(std::move(info)) {}

at::Tensor PreconditionedDenoiser::preconditioned(const PrecondCoefficients& c, const at::Tensor& x, const at::Tensor& labels,
                                                  const at::Tensor& c_noise_target) {
  const auto F = network_(per_sample(c.c_in, x) * x, c.c_noise, labels, c_noise_target);
  return per_sample(c.c_skip, x) * x + per_sample(c.c_out, x) * F;
}

at::Tensor PreconditionedDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  const auto c = precondition(parameterization_, sigma, info_.sigma_data, info_.sigma_min);
  return preconditioned(c, x, labels, c.c_noise);
}

at::Tensor PreconditionedDenoiser::denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) {
  const auto c = precondition(parameterization_, sigma, info_.sigma_data, info_.sigma_min);
  // Target σ = 0 (the data) has no finite noise embedding: the network sees σ_min there.
  const auto target = precondition(parameterization_, sigma_target.clamp_min(info_.sigma_min), info_.sigma_data, info_.sigma_min);
  return preconditioned(c, x, labels, target.c_noise);
}

std::pair<at::Tensor, at::Tensor> PreconditionedDenoiser::network_inputs(const at::Tensor& x, const at::Tensor& sigma) const {
  const auto c = precondition(parameterization_, sigma, info_.sigma_data, info_.sigma_min);
  return {per_sample(c.c_in, x) * x, c.c_noise};
}

std::string PreconditionedDenoiser::describe() const {
  return fmt::format("{}-preconditioned {}", parameterization_name(parameterization_), info_.description);
}

}  // namespace distillery
