#include "distill/scm.h"

#include <torch/types.h>
#include <torch/utils.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <numeric>
#include <optional>

#include "core/config.h"
#include "core/rng.h"
#include "distill/common/multistep_grids.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/student_network.h"
#include "distill/common/trigflow.h"
#include "models/network_denoiser.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

at::Tensor scm_tangent(const at::Tensor& held_output, const at::Tensor& scaled_output_tangent, const at::Tensor& x_hat, const at::Tensor& x_hat_velocity,
                       const at::Tensor& t_hat, double sigma_data, double warmup) {
  const auto cos = row_scale(t_hat.cos(), x_hat), sin = row_scale(t_hat.sin(), x_hat);
  return -cos.square() * (sigma_data * held_output - x_hat_velocity) - warmup * (cos * sin * x_hat + sigma_data * scaled_output_tangent);
}

void add_scm_fields(ConfigSchema& s) {
  s.add({"scm.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*), shared by the adaptive weighting", "5e-5"}, NumberRange::above(0));
  s.add({"scm.mode", ConfigType::String, "sCD: dx̂/dt̂ from the teacher's flow; sCT: from the example's own velocity (no teacher evaluation)", "distill", false,
         {"distill", "train"}});
  s.add({"scm.p_mean", ConfigType::Float, "mean of ln σ (sCM on CIFAR-10: −1.0)", "-1.0"});
  s.add({"scm.p_std", ConfigType::Float, "standard deviation of ln σ (sCM: 1.4)", "1.4"}, NumberRange::above(0));
  s.add({"scm.tangent_warmup_steps", ConfigType::Int, "steps over which r, the tangent's second term, rises from 0 to 1 (sCM: 10k)", "10000"},
        NumberRange::between(0, 1e12));
  s.add({"scm.tangent_norm_c", ConfigType::Float, "c of the tangent normalisation g/(‖g‖ + c)", "0.1"}, NumberRange::above(0));
  s.add({"scm.jvp", ConfigType::String, "the student's tangent: autodiff (exact), or a central finite difference (three evaluations)", "autodiff", false,
         {"autodiff", "finite-difference"}});
  s.add({"scm.jvp_step", ConfigType::Float, "h of the finite difference, in units of the tangent", "1e-3"}, NumberRange::above(0));
  s.add({"scm.prior_weighting", ConfigType::Bool, "weigh each row by 1/σ", "true"});
  s.add({"scm.adaptive_weighting", ConfigType::Bool, "learn u(t̂) and weigh by e^(−u), adding u to the loss", "true"});
  add_multistep_fields(s);
}

namespace {

// u(t̂): one linear layer on fixed Fourier features of EDM's noise embedding ln(σ)/4, started at
// zero so that the first steps weigh every row alike.
struct AdaptiveWeighting : torch::nn::Module {
  explicit AdaptiveWeighting(int64_t frequencies_count = 32) {
    frequencies = register_buffer("frequencies", torch::logspace(0.0, 2.0, frequencies_count, 10.0, torch::kFloat32));
    linear = register_module("linear", torch::nn::Linear(2 * frequencies_count, 1));
    torch::NoGradGuard no_grad;
    linear->weight.zero_();
    linear->bias.zero_();
  }
  at::Tensor forward(const at::Tensor& sigma) {
    const auto phase = (sigma.log() / 4).unsqueeze(1) * frequencies.unsqueeze(0);
    return linear->forward(torch::cat({phase.cos(), phase.sin()}, 1)).squeeze(1);
  }
  at::Tensor frequencies;
  torch::nn::Linear linear{nullptr};
};

// The student and its adaptive weighting under one optimiser and one gradient clip.
struct StudentWithWeighting : torch::nn::Module {
  StudentWithWeighting(const std::shared_ptr<torch::nn::Module>& network, std::shared_ptr<AdaptiveWeighting> adaptive) {
    register_module("network", network);
    weighting = register_module("weighting", std::move(adaptive));
  }
  std::shared_ptr<AdaptiveWeighting> weighting;
};

class ContinuousTimeConsistency final : public TrainingMethod {
 public:
  ContinuousTimeConsistency(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : lr_(config.get_float("scm.lr")),
        distill_(config.get_string("scm.mode") == "distill"),
        p_mean_(config.get_float("scm.p_mean")),
        p_std_(config.get_float("scm.p_std")),
        warmup_steps_(config.get_int("scm.tangent_warmup_steps")),
        norm_c_(config.get_float("scm.tangent_norm_c")),
        jvp_step_(config.get_float("scm.jvp_step")),
        jvp_mode_(config.get_string("scm.jvp") == "autodiff" ? JvpMode::Autodiff : JvpMode::FiniteDifference),
        prior_weighting_(config.get_bool("scm.prior_weighting")),
        adaptive_weighting_(config.get_bool("scm.adaptive_weighting")) {
    auto teacher = load_teacher(teacher_spec, device);
    sigma_min_ = teacher->sigma_min();
    sigma_max_ = teacher->sigma_max();
    // TrigFlow is EDM's preconditioning read in other coordinates: D is the consistency function.
    student_ = make_student_network(config, teacher_spec, *teacher, {.parameterization = Parameterization::EDM});
    sigma_data_ = student_->sigma_data();
    if (distill_) teacher_ = std::move(teacher);
    optimized_ = std::make_shared<StudentWithWeighting>(student_->shared_module(), std::make_shared<AdaptiveWeighting>());
    optimized_->weighting->to(device);
    data_.emplace(config, student_->sample_shape(), student_->num_classes(), noise_stream::consistency_flip, device);
    sampling_.emplace(config, sigma_max_);
  }

  NetworkDenoiser* generator() override { return student_.get(); }
  SampleRequest sampling() const override { return sampling_->request(); }
  std::map<std::string, std::string> output_metadata() const override { return sampling_->with_grids(TrainingMethod::output_metadata()); }
  std::vector<CheckpointModule> checkpoint_modules() override {
    return {{"generator", &student_->module(), student_->file_metadata()}, {"adaptive_weighting", optimized_->weighting.get()}};
  }
  std::vector<OptimizerSlot> optimizers() override { return {{"generator", optimized_.get(), lr_}}; }
  // The tangent's evaluations stay in the graph beside the student's: measured, a step holds
  // 1.1 times what one differentiated evaluation allocates (docs/measurements.md).
  double activation_memory_factor() const override { return 1.5; }

  std::map<std::string, double> step(StepContext& context) override {
    const auto positions = context.positions();
    const auto [x0, labels] = data_->batch(context.seed, positions);
    const auto noise = per_sample_normal(context.seed, noise_stream::consistency_noise, positions, student_->sample_shape(), x0.options());
    const auto sigma = lognormal_sigmas(context.seed, noise_stream::consistency_time, positions, p_mean_, p_std_, x0.options().dtype(at::kDouble))
                           .clamp(sigma_min_, sigma_max_);
    const auto t_hat = (sigma / sigma_data_).atan().to(x0.scalar_type());
    const auto cos = row_scale(t_hat.cos(), x0), sin = row_scale(t_hat.sin(), x0);
    const auto x_hat = cos * x0 + sin * sigma_data_ * noise;
    at::Tensor velocity;
    if (distill_) {
      torch::NoGradGuard no_grad;
      velocity = sigma_data_ * trigflow_output(*teacher_, x_hat, t_hat, labels, sigma_data_);
    } else {
      velocity = cos * sigma_data_ * noise - sin * x0;
    }
    const auto output = trigflow_output(*student_, x_hat, t_hat, labels, sigma_data_);
    const auto time_scale = t_hat.cos() * t_hat.sin();
    const auto held = trigflow_jvp(*student_, x_hat, t_hat, labels, sigma_data_, row_scale(time_scale, x0) * velocity, time_scale, jvp_mode_, jvp_step_);
    const double warmup = warmup_steps_ > 0 ? std::min(1.0, static_cast<double>(context.step) / static_cast<double>(warmup_steps_)) : 1.0;
    const auto tangent = scm_tangent(output.detach(), held.tangent, x_hat, velocity, t_hat, sigma_data_, warmup);
    std::vector<int64_t> sample_dims(static_cast<size_t>(x0.dim() - 1));
    std::iota(sample_dims.begin(), sample_dims.end(), 1);
    const auto tangent_norm = tangent.square().sum(sample_dims).sqrt();
    const auto normalized = tangent / (row_scale(tangent_norm, x0) + norm_c_);
    const auto per_row = (output - output.detach() - normalized).square().mean(sample_dims);
    at::Tensor weight = prior_weighting_ ? (1.0 / sigma).to(per_row.options()) : torch::ones_like(per_row);
    at::Tensor loss;
    if (adaptive_weighting_) {
      const auto u = optimized_->weighting->forward(sigma.to(per_row.options()));
      loss = (weight * (-u).exp() * per_row + u).mean();
    } else {
      loss = (weight * per_row).mean();
    }
    context.update("generator", loss);
    return {{"scm_loss", loss.item<double>()}, {"tangent_norm", tangent_norm.mean().item<double>()}, {"tangent_warmup", warmup}};
  }

 private:
  double lr_;
  bool distill_;
  double p_mean_, p_std_;
  int64_t warmup_steps_;
  double norm_c_, jvp_step_;
  JvpMode jvp_mode_;
  bool prior_weighting_, adaptive_weighting_;
  double sigma_min_ = 0, sigma_max_ = 0, sigma_data_ = 0.5;
  std::unique_ptr<Denoiser> teacher_;
  std::unique_ptr<NetworkDenoiser> student_;
  std::shared_ptr<StudentWithWeighting> optimized_;
  std::optional<RealDataStream> data_;
  std::optional<ConsistencySampling> sampling_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_scm(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<ContinuousTimeConsistency>(config, teacher, device);
}

}  // namespace distillery
