#include "distill/pd.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <algorithm>
#include <bit>
#include <optional>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/store_pairs.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "samplers/schedule.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_pd_fields(ConfigSchema& s) {
  s.add({"pd.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "1e-4"}, NumberRange::above(0));
  s.add({"pd.start_steps", ConfigType::Int, "N_0, the first round's student steps (a power of two; its teacher takes twice as many)", "8"},
        NumberRange::between(1, 4096));
  s.add({"pd.final_steps", ConfigType::Int, "the last round's student steps (a power of two, at most pd.start_steps)", "1"}, NumberRange::between(1, 4096));
  s.add({"pd.round_steps", ConfigType::Int, "training steps per round; steps beyond the last round's share go on training it", "1000"},
        NumberRange::between(1, 100000000));
  s.add({"pd.rho", ConfigType::Float, "ρ of the Karras grid of 2·N_0 steps every round's grid is taken from", "7"}, NumberRange::above(0));
  s.add({"pd.store", ConfigType::String,
         "trajectory store of the teacher whose final states replace data.* as the clean inputs (data-free distillation; empty: data.*)", "\"\""});
  s.add({"pd.solver", ConfigType::String, "the original teacher's step in round 0 (later rounds' teachers are students: DDIM)", "heun", false,
         {"heun", "euler"}});
  s.add({"pd.original_substeps", ConfigType::Int,
         "K: round 0's original teacher makes each of its two steps in K solver steps, on a Karras grid of 2·N_0·K steps (1: two steps)", "1"},
        NumberRange::between(1, 64));
}

ProgressiveRounds::ProgressiveRounds(double sigma_min, double sigma_max, double rho, int64_t start_steps, int64_t final_steps,
                                     int64_t original_substeps)
    : start_steps_(start_steps), original_substeps_(original_substeps) {
  const auto power_of_two = [](int64_t n) { return n >= 1 && std::has_single_bit(static_cast<uint64_t>(n)); };
  DISTILLERY_CHECK(power_of_two(start_steps) && power_of_two(final_steps) && final_steps <= start_steps,
                   Error("progressive distillation halves the steps each round").field("pd.start_steps")
                       .expected("pd.start_steps and pd.final_steps powers of two, final ≤ start")
                       .got(fmt::format("start {}, final {}", start_steps, final_steps)));
  count_ = std::countr_zero(static_cast<uint64_t>(start_steps)) - std::countr_zero(static_cast<uint64_t>(final_steps)) + 1;
  DISTILLERY_CHECK(original_substeps >= 1, Error("round 0's teacher needs at least one solver step per step").field("pd.original_substeps")
                                               .got(std::to_string(original_substeps)));
  base_ = make_sigmas({ScheduleKind::Karras, sigma_min, sigma_max, rho}, static_cast<int>(2 * start_steps * original_substeps));
}

std::vector<double> ProgressiveRounds::every(int64_t stride) const {
  std::vector<double> sigmas;
  for (size_t i = 0; i < base_.size(); i += static_cast<size_t>(stride)) sigmas.push_back(base_[i]);
  return sigmas;
}

at::Tensor pd_target(Denoiser& teacher, const Sampler& solver, const at::Tensor& x_t, const std::vector<std::vector<double>>& path,
                     const SampleContext& context) {
  DISTILLERY_CHECK(path.size() >= 2, Error("a progressive-distillation target needs the teacher's path from t to s").got(fmt::format("{} σ", path.size())));
  torch::NoGradGuard no_grad;
  auto x_s = x_t;
  for (size_t k = 0; k + 1 < path.size(); ++k) x_s = solver.step(teacher, x_s, RowStep{path[k], path[k + 1]}, context).x;
  const auto& t = path.front();
  const auto& s = path.back();
  // x_s = x̃ + (s/t)·(x_t − x̃)  ⇔  x̃ = (t·x_s − s·x_t)/(t − s).
  std::vector<double> of_end(t.size()), of_start(t.size());
  for (size_t r = 0; r < t.size(); ++r) {
    of_end[r] = t[r] / (t[r] - s[r]);
    of_start[r] = s[r] / (t[r] - s[r]);
  }
  return per_row(of_end, x_t) * x_s - per_row(of_start, x_t) * x_t;
}

namespace {

class ProgressiveDistillation final : public TrainingMethod {
 public:
  ProgressiveDistillation(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : lr_(config.get_float("pd.lr")),
        round_steps_(config.get_int("pd.round_steps")),
        original_(load_teacher(teacher_spec, device)),
        rounds_(original_->sigma_min(), original_->sigma_max(), config.get_float("pd.rho"), config.get_int("pd.start_steps"),
                config.get_int("pd.final_steps"), config.get_int("pd.original_substeps")),
        original_solver_(make_sampler(config.get_string("pd.solver"))),
        ddim_(make_sampler("euler")) {
    DISTILLERY_CHECK(config.get_float_list("student.sigmas").empty(),
                     Error("progressive distillation's students take the grids of their rounds").file(config.source()).field("student.sigmas")
                         .hint("set pd.start_steps and pd.final_steps instead"));
    student_ = make_student_network(config, teacher_spec, *original_);
    if (config.get_string("pd.store").empty())
      data_.emplace(config, student_->sample_shape(), student_->num_classes(), noise_stream::pd_flip, device);
    else
      samples_ = open_teacher_store(config, "pd.store", teacher_spec, *student_, "the teacher's samples need its trajectory store");
  }

  NetworkDenoiser* generator() override { return student_.get(); }
  SampleRequest sampling() const override {
    SampleRequest request;
    request.sampler = "euler";
    request.sigmas = rounds_.student_sigmas(round_);
    request.sigmas.pop_back();
    request.steps = static_cast<int>(request.sigmas.size());
    return request;
  }
  std::vector<CheckpointModule> checkpoint_modules() override {
    std::vector<CheckpointModule> modules = {{"generator", &student_->module(), student_->file_metadata()}};
    if (round_teacher_) modules.push_back({"teacher", &round_teacher_->module(), round_teacher_->file_metadata()});
    return modules;
  }
  std::vector<OptimizerSlot> optimizers() override { return {{"generator", &student_->module(), lr_}}; }

  int64_t phase_of(int64_t step) const override { return std::min(step / round_steps_, rounds_.count() - 1); }
  // A round's result is what the trainer wrote for it, the output EMA where there is one: the next
  // round distils that network and starts from it, not from the raw weights the EMA smoothed.
  void end_phase(int64_t /*round*/, const NetworkDenoiser& result) override {
    if (&result != student_.get()) student_->copy_weights_from(result);
  }
  void begin_phase(int64_t round) override {
    round_ = round;
    // On resume the checkpoint then overwrites these weights with the round's teacher.
    round_teacher_ = round > 0 ? student_->clone() : nullptr;
  }

  std::map<std::string, double> step(StepContext& context) override {
    const auto positions = context.positions();
    const auto [x0, labels] = clean_inputs(context);
    const auto teacher_grid = rounds_.teacher_sigmas(round_);
    const auto steps = rounds_.student_steps(round_);
    const auto teacher_steps_per_step = static_cast<int64_t>(teacher_grid.size() - 1) / steps;
    const auto u = uniform_per_sample(context.seed, noise_stream::pd_step, positions).contiguous();
    std::vector<std::vector<double>> path(static_cast<size_t>(teacher_steps_per_step + 1), std::vector<double>(positions.size()));
    std::vector<double> weight(positions.size());
    for (size_t r = 0; r < positions.size(); ++r) {
      const auto i = std::min(static_cast<int64_t>(u.data_ptr<double>()[r] * static_cast<double>(steps)), steps - 1);
      for (size_t k = 0; k < path.size(); ++k) path[k][r] = teacher_grid[static_cast<size_t>(i * teacher_steps_per_step) + k];
      weight[r] = std::max(1.0 / (path.front()[r] * path.front()[r]), 1.0);
    }
    const auto& t = path.front();
    const auto noise = per_sample_normal(context.seed, noise_stream::pd_noise, positions, student_->sample_shape(), x0.options());
    const auto x_t = x0 + per_row(t, x0) * noise;
    Denoiser& teacher = round_teacher_ ? static_cast<Denoiser&>(*round_teacher_) : *original_;
    const auto target = pd_target(teacher, round_teacher_ ? *ddim_ : *original_solver_, x_t, path, SampleContext{labels, context.seed, positions});
    const auto predicted = denoise_rows(*student_, x_t, t, labels);
    const auto loss = (per_row(weight, x_t) * (predicted - target).square()).flatten(1).mean(1).mean();
    context.update("generator", loss);
    return {{"pd_loss", loss.item<double>()}, {"student_steps", static_cast<double>(steps)}};
  }

 private:
  std::pair<at::Tensor, at::Tensor> clean_inputs(const StepContext& context) {
    if (data_) return data_->batch(context.seed, context.positions());
    const auto pair = pairs_for_step(*samples_, context);
    const auto x0 = pair.sample.to(original_->device());
    return {x0, student_->num_classes() > 0 ? pair.labels.to(x0.device()) : at::Tensor()};
  }

  double lr_;
  int64_t round_steps_, round_ = 0;
  std::unique_ptr<Denoiser> original_;
  ProgressiveRounds rounds_;
  std::unique_ptr<Sampler> original_solver_, ddim_;
  std::unique_ptr<NetworkDenoiser> student_, round_teacher_;
  std::optional<RealDataStream> data_;
  std::unique_ptr<TrajectoryReader> samples_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_pd(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<ProgressiveDistillation>(config, teacher, device);
}

}  // namespace distillery
