// defines: Parameterization, PrecondCoefficients, precondition, PreconditionedDenoiser,
//          parameterization_from_name, rf_time_from_sigma, sigma_from_rf_time, vp_time_from_sigma, sigma_from_vp_time,
//          kDdpmSteps, ddpm_sigmas, ddpm_timestep
// Preconditioning (Karras et al. 2022, "Elucidating the Design Space...", Table 1):
// D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)). EDM, VP, VE, rectified-flow,
// consistency-model, TrigFlow and discrete DDPM networks all become EDM denoisers here, and
// nowhere else.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "models/denoiser.h"

namespace distillery {

enum class Parameterization {
  EDM,            // F predicts a scaled mix of x0 and n
  VP,             // DDPM/DDIM ε-prediction, continuous-time VP (β_min 0.1, β_d 19.9, M 1000)
  VE,             // NCSN-style F = −n
  RectifiedFlow,  // x_t = (1−t)·x0 + t·n, F = v = n − x0, fed t
  // Consistency models (Song et al. 2023, appendix C): EDM's with c_skip(σ) = σ_d²/((σ−σ_min)² + σ_d²)
  // and c_out(σ) = σ_d(σ−σ_min)/√(σ² + σ_d²), so D(x; σ_min) = x exactly, the boundary condition.
  Consistency,
  // TrigFlow (Lu & Song 2024): x_t = cos(t)·x0 + sin(t)·σ_d·n, σ = σ_d·tan t, F = (dx_t/dt)/σ_d =
  // cos(t)·n − sin(t)·x0/σ_d, D = cos(t)·x_t − sin(t)·σ_d·F, fed t.
  TrigFlow,
  // Discrete DDPM ε-prediction (Ho et al. 2020) on its linear β schedule, DiT's: x_t =
  // √ᾱ_j·(x0 + σ_j·n), F = n, fed the timestep j; between and beyond the 1000 steps the
  // timestep is fractional, linear in log σ (ddpm_timestep).
  DDPM,
};
inline constexpr int kParameterizationCount = 7;
std::string_view parameterization_name(Parameterization p);
Parameterization parameterization_from_name(std::string_view name);  // Error lists the valid names

struct PrecondCoefficients {
  at::Tensor c_skip, c_out, c_in, c_noise;  // each [N], like σ
};
// `sigma_min` is where a consistency model's boundary condition holds (other parameterisations ignore it).
PrecondCoefficients precondition(Parameterization p, const at::Tensor& sigma, double sigma_data = 0.5, double sigma_min = 0.002);

// Rectified flow: x_t = x / (1 + σ) with t = σ / (1 + σ).
double rf_time_from_sigma(double sigma);
double sigma_from_rf_time(double t);
// Continuous VP: σ(t) = sqrt(exp(½ β_d t² + β_min t) − 1).
double sigma_from_vp_time(double t);
double vp_time_from_sigma(double sigma);
// DDPM's linear schedule: β_j = 1e-4 + (0.02 − 1e-4)·j/999 for j = 0..999, ᾱ_j = Π_{i≤j}(1 − β_i),
// σ_j = √(1/ᾱ_j − 1): 0.0100 to 157.4, increasing.
inline constexpr int kDdpmSteps = 1000;
const std::vector<double>& ddpm_sigmas();
// The timestep of σ ([N], any floating type): j at σ_j, linear in log σ between and beyond them.
at::Tensor ddpm_timestep(const at::Tensor& sigma);
// TrigFlow: t = arctan(σ/σ_d) ∈ [0, π/2).
double trigflow_time_from_sigma(double sigma, double sigma_data);
double sigma_from_trigflow_time(double t, double sigma_data);

// F(c_in·x, c_noise, labels, c_noise_target) -> raw network output, shaped like x. A network
// without a target-time input ignores c_noise_target; denoise() feeds it c_noise itself.
using RawNetwork =
    std::function<at::Tensor(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target)>;

class PreconditionedDenoiser : public Denoiser {
 public:
  struct Info {
    std::vector<int64_t> sample_shape = {};
    int64_t num_classes = 0;
    double sigma_min = 0.002, sigma_max = 80.0, sigma_data = 0.5;
    std::string description = {};
    c10::Device device = c10::Device(c10::DeviceType::CPU);  // where the network computes
  };
  PreconditionedDenoiser(Parameterization p, RawNetwork network, Info info);

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  // The same preconditioning around F fed c_noise(max(σ_target, σ_min)) as its target time.
  at::Tensor denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) override;
  // What the network is fed for (x, σ): c_in·x and c_noise (for readers of its inner features).
  std::pair<at::Tensor, at::Tensor> network_inputs(const at::Tensor& x, const at::Tensor& sigma) const;
  c10::Device device() const override { return info_.device; }
  // The network closure moves with whoever owns it; this records where it now is.
  void to(const c10::Device& device) override { info_.device = device; }
  std::vector<int64_t> sample_shape() const override { return info_.sample_shape; }
  int64_t num_classes() const override { return info_.num_classes; }
  double sigma_min() const override { return info_.sigma_min; }
  double sigma_max() const override { return info_.sigma_max; }
  std::string describe() const override;

 private:
  at::Tensor preconditioned(const PrecondCoefficients& c, const at::Tensor& x, const at::Tensor& labels, const at::Tensor& c_noise_target);

  Parameterization parameterization_;
  RawNetwork network_;
  Info info_;
};

}  // namespace distillery
