#include "distill/cd.h"

#include <torch/types.h>

#include <algorithm>
#include <optional>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/distances.h"
#include "distill/common/multistep_grids.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "samplers/schedule.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_cd_fields(ConfigSchema& s) {
  s.add({"cd.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "1e-4"}, NumberRange::above(0));
  s.add({"cd.grid_points", ConfigType::Int, "N, the points of the Karras σ grid whose adjacent pairs the loss compares (CD on CIFAR-10: 18)", "18"},
        NumberRange::between(2, 100000));
  s.add({"cd.rho", ConfigType::Float, "ρ of that grid", "7"}, NumberRange::above(0));
  s.add({"cd.target_decay", ConfigType::Float, "μ of the target network: θ⁻ ← μ·θ⁻ + (1 − μ)·θ after every step (CD: 0.95)", "0.95"},
        NumberRange::between(0, 1));
  s.add({"cd.solver", ConfigType::String, "the teacher's ODE step from σ_{n+1} to σ_n", "heun", false, {"heun", "euler"}});
  add_distance_fields(s, "cd");
  add_multistep_fields(s);
}

CdSettings cd_settings_from(const Config& c) {
  CdSettings s;
  s.lr = c.get_float("cd.lr");
  s.grid_points = c.get_int("cd.grid_points");
  s.rho = c.get_float("cd.rho");
  s.target_decay = c.get_float("cd.target_decay");
  s.solver = c.get_string("cd.solver");
  return s;
}

at::Tensor consistency_teacher_estimate(Denoiser& teacher, const Sampler& solver, const at::Tensor& x_next, const std::vector<double>& sigma_next,
                                        const std::vector<double>& sigma_now, const SampleContext& context) {
  torch::NoGradGuard no_grad;
  return solver.step(teacher, x_next, RowStep{sigma_next, sigma_now}, context).x;
}

namespace {

class ConsistencyDistillation final : public TrainingMethod {
 public:
  ConsistencyDistillation(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : settings_(cd_settings_from(config)), teacher_(load_teacher(teacher_spec, device)), solver_(make_sampler(settings_.solver)) {
    // The consistency preconditioning makes the boundary condition f(x; σ_min) = x exact.
    student_ = make_student_network(config, teacher_spec, *teacher_, {.parameterization = Parameterization::Consistency});
    target_ = student_->clone();
    grid_ = karras_grid_ascending(teacher_->sigma_min(), teacher_->sigma_max(), settings_.rho, settings_.grid_points);
    sampling_.emplace(config, teacher_->sigma_max());

    const auto shape = student_->sample_shape();
    distance_ = distance_from(config, "cd", shape, device);
    data_.emplace(config, shape, student_->num_classes(), noise_stream::consistency_flip, device);
  }

  NetworkDenoiser* generator() override { return student_.get(); }
  SampleRequest sampling() const override { return sampling_->request(); }
  std::map<std::string, std::string> output_metadata() const override { return sampling_->with_grids(TrainingMethod::output_metadata()); }
  std::vector<CheckpointModule> checkpoint_modules() override {
    return {{"generator", &student_->module(), student_->file_metadata()}, {"target", &target_->module(), target_->file_metadata()}};
  }
  std::vector<OptimizerSlot> optimizers() override { return {{"generator", &student_->module(), settings_.lr}}; }
  std::vector<EmaSlot> averages() override {
    const double mu = settings_.target_decay;
    return {{"target", &target_->module(), &student_->module(), [mu](int64_t) { return mu; }}};
  }

  std::map<std::string, double> step(StepContext& context) override {
    const auto positions = context.positions();
    const auto [x0, labels] = data_->batch(context.seed, positions);
    // The pair index n ∈ {0, …, N−2} of each row, uniform.
    const auto u = uniform_per_sample(context.seed, noise_stream::consistency_pair, positions).contiguous();
    const double* uniform = u.data_ptr<double>();
    std::vector<double> sigma_now(positions.size()), sigma_next(positions.size());
    const auto pairs = static_cast<double>(grid_.size() - 1);
    for (size_t r = 0; r < positions.size(); ++r) {
      const auto n = std::min(static_cast<size_t>(uniform[r] * pairs), grid_.size() - 2);
      sigma_now[r] = grid_[n];
      sigma_next[r] = grid_[n + 1];
    }
    const auto noise = per_sample_normal(context.seed, noise_stream::consistency_noise, positions, student_->sample_shape(), x0.options());
    const auto x_next = x0 + per_row(sigma_next, x0) * noise;
    const SampleContext sample_context{labels, context.seed, positions};
    at::Tensor target;
    {
      torch::NoGradGuard no_grad;
      const auto x_now = consistency_teacher_estimate(*teacher_, *solver_, x_next, sigma_next, sigma_now, sample_context);
      target = denoise_rows(*target_, x_now, sigma_now, labels);
    }
    const auto predicted = denoise_rows(*student_, x_next, sigma_next, labels);
    const auto loss = distance_(predicted, target).mean();
    context.update("generator", loss);
    return {{"consistency_loss", loss.item<double>()}};
  }

 private:
  CdSettings settings_;
  std::unique_ptr<Denoiser> teacher_;
  std::unique_ptr<Sampler> solver_;
  std::unique_ptr<NetworkDenoiser> student_, target_;
  std::vector<double> grid_;
  Distance distance_;
  std::optional<RealDataStream> data_;
  std::optional<ConsistencySampling> sampling_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_cd(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<ConsistencyDistillation>(config, teacher, device);
}

}  // namespace distillery
