#include "distill/ctm.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/discriminator.h"
#include "distill/common/distances.h"
#include "distill/common/multistep_grids.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "teachers/edm_loss.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_ctm_fields(ConfigSchema& s) {
  s.add({"ctm.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "5e-5"}, NumberRange::above(0));
  s.add({"ctm.grid_points", ConfigType::Int, "N, the points of the Karras σ grid t, u and s are drawn on (CTM on CIFAR-10: 18)", "18"},
        NumberRange::between(3, 100000));
  s.add({"ctm.rho", ConfigType::Float, "ρ of that grid", "7"}, NumberRange::above(0));
  s.add({"ctm.teacher_steps", ConfigType::Int, "the most grid steps the teacher solves from t to u (k is uniform in 1..this, capped at N − 2)", "17"},
        NumberRange::between(1, 100000));
  s.add({"ctm.solver", ConfigType::String, "the teacher's ODE step along the grid", "heun", false, {"heun", "euler"}});
  s.add({"ctm.target_decay", ConfigType::Float, "μ of the target network: θ⁻ ← μ·θ⁻ + (1 − μ)·θ after every step (CTM: 0.999)", "0.999"},
        NumberRange::between(0, 1));
  add_distance_fields(s, "ctm");
  s.add({"ctm.dsm_weight", ConfigType::Float, "weight of the denoising loss on g(x, σ, σ) (0: none)", "1"}, NumberRange::at_least(0));
  s.add({"ctm.dsm_p_mean", ConfigType::Float, "P_mean of the denoising loss's log-normal σ (EDM's)", "-1.2"});
  s.add({"ctm.dsm_p_std", ConfigType::Float, "P_std of the denoising loss's log-normal σ", "1.2"}, NumberRange::above(0));
  s.add({"ctm.gan_weight", ConfigType::Float,
         "weight of CTM's GAN term: the hinge generator loss of the student's one-step jump G(x_t, t, 0) through the discriminator "
         "(adversarial.*) (0: none)",
         "0"}, NumberRange::at_least(0));
  s.add({"ctm.gan_features", ConfigType::String,
         "the discriminator's frozen network: the teacher (its features of noised images), or a Fashion-MNIST classifier (ctm.gan_classifier; "
         "adversarial.taps among conv1, conv2, conv3, features)",
         "teacher", false, {"teacher", "classifier"}});
  s.add({"ctm.gan_sigma_mean", ConfigType::Float, "teacher features: m of the noise level the teacher sees the images at, σ = exp(m + s·n)", "-2"});
  s.add({"ctm.gan_sigma_std", ConfigType::Float, "teacher features: s of the same", "1"}, NumberRange::above(0));
  s.add({"ctm.gan_classifier", ConfigType::String,
         "classifier features: its file (FD_fmnist is measured in the shipped one's features: train another to keep the two apart)",
         "assets/eval/fmnist-classifier.safetensors"});
  add_discriminator_fields(s, "[enc.1, bottleneck, dec.1]");
  s.add({"ctm.gamma", ConfigType::Float, "the student's γ-sampling: 1 re-noises fully after every jump (consistency models' multistep sampling), "
         "0 jumps deterministically", "1"}, NumberRange::between(0, 1));
  add_multistep_fields(s);
}

CtmTimes ctm_times(int64_t grid_points, int64_t max_teacher_steps, uint64_t seed, int64_t batch_position, const std::vector<int64_t>& positions) {
  DISTILLERY_CHECK(grid_points >= 3 && max_teacher_steps >= 1 && !positions.empty(),
                   Error("CTM draws t < u ≤ s on a grid of at least 3 points").got(fmt::format("{} points", grid_points)));
  const auto index = [](double uniform, int64_t count) { return std::min(static_cast<int64_t>(uniform * static_cast<double>(count)), count - 1); };
  CtmTimes times;
  // One k for the batch over all ranks, so that every rank's teacher solves as many steps.
  const auto k_draw = uniform_per_sample(seed, noise_stream::consistency_second_time, {batch_position});
  times.k = 1 + index(k_draw.data_ptr<double>()[0], std::min(max_teacher_steps, grid_points - 2));
  const auto t_draw = uniform_per_sample(seed, noise_stream::consistency_pair, positions).contiguous();
  const auto s_draw = uniform_per_sample(seed, noise_stream::consistency_time, positions).contiguous();
  for (size_t r = 0; r < positions.size(); ++r) {
    const int64_t t = index(t_draw.data_ptr<double>()[r], grid_points - 1 - times.k), u = t + times.k;
    times.t.push_back(t);
    times.u.push_back(u);
    times.s.push_back(u + index(s_draw.data_ptr<double>()[r], grid_points - u));
  }
  return times;
}

at::Tensor ctm_teacher_solve(Denoiser& teacher, const Sampler& solver, const at::Tensor& x_t, const std::vector<double>& grid, const CtmTimes& times,
                             const SampleContext& context) {
  torch::NoGradGuard no_grad;
  auto x = x_t;
  RowStep rows{std::vector<double>(times.t.size()), std::vector<double>(times.t.size())};
  for (int64_t m = 0; m < times.k; ++m) {
    for (size_t r = 0; r < times.t.size(); ++r) {
      rows.sigma_from[r] = grid.at(static_cast<size_t>(times.t[r] + m));
      rows.sigma_to[r] = grid.at(static_cast<size_t>(times.t[r] + m + 1));
    }
    x = solver.step(teacher, x, rows, context).x;
  }
  return x;
}

namespace {

std::vector<double> at_indices(const std::vector<double>& grid, const std::vector<int64_t>& indices) {
  std::vector<double> out;
  for (const auto i : indices) out.push_back(grid.at(static_cast<size_t>(i)));
  return out;
}

class ConsistencyTrajectoryModel final : public TrainingMethod {
 public:
  ConsistencyTrajectoryModel(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : lr_(config.get_float("ctm.lr")),
        max_teacher_steps_(config.get_int("ctm.teacher_steps")),
        target_decay_(config.get_float("ctm.target_decay")),
        dsm_weight_(config.get_float("ctm.dsm_weight")),
        dsm_p_mean_(config.get_float("ctm.dsm_p_mean")),
        dsm_p_std_(config.get_float("ctm.dsm_p_std")),
        gamma_(config.get_float("ctm.gamma")),
        gan_weight_(config.get_float("ctm.gan_weight")),
        teacher_(load_teacher(teacher_spec, device)),
        solver_(make_sampler(config.get_string("ctm.solver"))) {
    student_ = make_student_network(config, teacher_spec, *teacher_, {.parameterization = Parameterization::EDM, .target_time = true});
    target_ = student_->clone();
    grid_ = karras_grid_ascending(teacher_->sigma_min(), teacher_->sigma_max(), config.get_float("ctm.rho"), config.get_int("ctm.grid_points"));
    std::reverse(grid_.begin(), grid_.end());
    sampling_.emplace(config, teacher_->sigma_max());
    distance_ = distance_from(config, "ctm", student_->sample_shape(), device);
    data_.emplace(config, student_->sample_shape(), student_->num_classes(), noise_stream::consistency_flip, device);
    if (gan_weight_ > 0) {
      FrozenFeatures features;
      if (config.get_string("ctm.gan_features") == "classifier") {
        features = classifier_features(config, "ctm.gan_classifier", device);
      } else {
        auto* teacher_network = dynamic_cast<NetworkDenoiser*>(teacher_.get());
        DISTILLERY_CHECK(teacher_network, Error("CTM's GAN term reads the teacher's own features, and this teacher has no network to read")
                                              .field("ctm.gan_weight").got(teacher_->describe())
                                              .hint("give a network teacher, set ctm.gan_features=classifier, or set ctm.gan_weight=0"));
        features = noised_teacher_features(*teacher_network, configured_taps(config, "adversarial.taps", teacher_network->feature_taps()),
                                           config.get_float("ctm.gan_sigma_mean"), config.get_float("ctm.gan_sigma_std"));
      }
      torch::manual_seed(static_cast<uint64_t>(config.get_int("train.seed")));
      discriminator_.emplace(config, std::move(features), student_->num_classes(), device);
    }
  }

  NetworkDenoiser* generator() override { return student_.get(); }
  SampleRequest sampling() const override {
    auto request = sampling_->request();
    request.options.gamma = gamma_;
    return request;
  }
  std::map<std::string, std::string> output_metadata() const override {
    auto metadata = sampling_->with_grids(TrainingMethod::output_metadata());
    metadata["student_gamma"] = fmt::format("{}", gamma_);
    return metadata;
  }
  std::vector<CheckpointModule> checkpoint_modules() override {
    std::vector<CheckpointModule> modules = {{"generator", &student_->module(), student_->file_metadata()},
                                             {"target", &target_->module(), target_->file_metadata()}};
    if (discriminator_) modules.push_back({"discriminator_heads", &discriminator_->heads()});
    return modules;
  }
  std::vector<OptimizerSlot> optimizers() override {
    std::vector<OptimizerSlot> slots = {{"generator", &student_->module(), lr_}};
    if (discriminator_) slots.push_back({"discriminator", &discriminator_->heads(), discriminator_->lr()});
    return slots;
  }
  std::vector<EmaSlot> averages() override {
    const double mu = target_decay_;
    return {{"target", &target_->module(), &student_->module(), [mu](int64_t) { return mu; }}};
  }

  std::map<std::string, double> step(StepContext& context) override {
    const auto positions = context.positions();
    const auto [x0, labels] = data_->batch(context.seed, positions);
    const auto noise = per_sample_normal(context.seed, noise_stream::consistency_noise, positions, student_->sample_shape(), x0.options());
    const auto times = ctm_times(static_cast<int64_t>(grid_.size()), max_teacher_steps_, context.seed, context.batch_position(), positions);
    // Each row's σ at t, u and s, built once: [N, 1, ...] for x_t, flat for the jumps.
    const auto t_rows = per_row(at_indices(grid_, times.t), x0);
    const auto t = t_rows.flatten(), u = per_row(at_indices(grid_, times.u), x0).flatten(), s = per_row(at_indices(grid_, times.s), x0).flatten();
    const auto data = torch::zeros_like(s);
    const auto x_t = x0 + t_rows * noise;
    at::Tensor target;
    {
      torch::NoGradGuard no_grad;
      const auto x_u = ctm_teacher_solve(*teacher_, *solver_, x_t, grid_, times, SampleContext{labels, context.seed, positions});
      target = jump(*target_, jump(*target_, x_u, u, s, labels), s, data, labels);
    }
    const auto estimate = jump(*target_, jump(*student_, x_t, t, s, labels), s, data, labels);
    const auto ctm_loss = distance_(estimate, target).mean();
    auto loss = ctm_loss;
    std::map<std::string, double> stats = {{"ctm_loss", ctm_loss.item<double>()}, {"teacher_steps", static_cast<double>(times.k)}};
    if (dsm_weight_ > 0) {
      const auto sigma = lognormal_sigmas(context.seed, noise_stream::consistency_dsm_sigma, positions, dsm_p_mean_, dsm_p_std_, x0.options());
      const auto dsm_noise = per_sample_normal(context.seed, noise_stream::consistency_dsm_noise, positions, student_->sample_shape(), x0.options());
      const auto dsm_loss = edm_loss(*student_, x0, sigma, dsm_noise, labels, student_->sigma_data());
      loss = loss + dsm_weight_ * dsm_loss;
      stats["dsm_loss"] = dsm_loss.item<double>();
    }
    if (discriminator_) {
      // The GAN term trains the jump a one-step sample takes, from x_t straight to the data
      // (CTM's "consistency" GAN estimate), against the batch's real examples.
      const auto one_step = jump(*student_, x_t, t, data, labels);
      context.update("discriminator", discriminator_->loss(x0, one_step, labels, {}, context, stats));
      loss = loss + gan_weight_ * discriminator_->generator_loss(one_step, labels, {}, context, stats);
    }
    context.update("generator", loss);
    return stats;
  }

 private:
  double lr_;
  int64_t max_teacher_steps_;
  double target_decay_, dsm_weight_, dsm_p_mean_, dsm_p_std_, gamma_, gan_weight_;
  std::unique_ptr<Denoiser> teacher_;
  std::unique_ptr<Sampler> solver_;
  std::unique_ptr<NetworkDenoiser> student_, target_;
  std::vector<double> grid_;  // descending, σ_max first
  Distance distance_;
  std::optional<RealDataStream> data_;
  std::optional<ConsistencySampling> sampling_;
  std::optional<Discriminator> discriminator_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_ctm(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<ConsistencyTrajectoryModel>(config, teacher, device);
}

}  // namespace distillery
