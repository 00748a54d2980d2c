#include "distill/disback.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/config.h"
#include "core/error.h"
#include "distill/dmd2.h"
#include "models/network_denoiser.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

DisbackPath::DisbackPath(int64_t degradation_steps, int64_t checkpoints, int64_t target_steps)
    : degradation_steps_(degradation_steps), checkpoints_(checkpoints), target_steps_(target_steps) {}

int64_t DisbackPath::checkpoint_taken_before(int64_t step) const {
  for (int64_t k = 1; k < checkpoints_; ++k)
    if (k * degradation_steps_ / checkpoints_ == step) return k;
  return 0;
}

int64_t DisbackPath::target_at(int64_t step) const {
  const auto walked = (step - degradation_steps_) / target_steps_ + 1;  // targets reached so far, the current one included
  return std::max<int64_t>(checkpoints_ - walked, 0);
}

void add_disback_fields(ConfigSchema& s) {
  add_dmd2_fields(s);
  s.add({"disback.degradation_steps", ConfigType::Int, "steps of degradation recording: the critic learns the initial generator, the generator waits", "200"},
        NumberRange::at_least(1));
  s.add({"disback.path_checkpoints", ConfigType::Int, "critic checkpoints N kept along the degradation, evenly spaced, the last as it ends", "4"},
        NumberRange::between(1, 64));
  s.add({"disback.target_steps", ConfigType::Int, "backtracking steps against each intermediate checkpoint before the next (the teacher last)", "100"},
        NumberRange::at_least(1));
}

namespace {

class Disback final : public TrainingMethod {
 public:
  Disback(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : config_(config), path_(config.get_int("disback.degradation_steps"), config.get_int("disback.path_checkpoints"), config.get_int("disback.target_steps")) {
    DISTILLERY_CHECK(config.get_string("student.init") != "scratch",
                     Error("DisBack's path starts at the teacher's network, which the critic starts as").file(config.source()).field("student.init")
                         .expected("teacher, or a student's network file"));
    DISTILLERY_CHECK(path_.checkpoints() <= path_.degradation_steps(),
                     Error("each checkpoint of the degradation path needs a step of its own").file(config.source()).field("disback.path_checkpoints")
                         .expected(fmt::format("at most disback.degradation_steps ({})", path_.degradation_steps())).got(std::to_string(path_.checkpoints())));
    // Not an error: a run may be stopped early and extended with --resume.
    if (config.get_int("train.steps") <= path_.teacher_from())
      spdlog::warn("train.steps {} ends the run before backtracking reaches the teacher at step {}: the student matches a degraded checkpoint",
                   config.get_int("train.steps"), path_.teacher_from());
    dmd2_ = make_dmd2_training(config, teacher_spec, device);
    for (int64_t k = 1; k < path_.checkpoints(); ++k) checkpoints_.push_back(dmd2_->critic().clone());
    begin_phase(0);
  }

  NetworkDenoiser* generator() override { return dmd2_->generator(); }
  SampleRequest sampling() const override { return dmd2_->sampling(); }
  std::vector<CheckpointModule> checkpoint_modules() override {
    auto modules = dmd2_->checkpoint_modules();
    for (size_t k = 0; k < checkpoints_.size(); ++k)
      modules.push_back({fmt::format("path_{}", k + 1), &checkpoints_[k]->module(), checkpoints_[k]->file_metadata()});
    return modules;
  }
  std::vector<OptimizerSlot> optimizers() override {
    auto slots = dmd2_->optimizers();
    if (phase_ == 0) std::erase_if(slots, [](const OptimizerSlot& slot) { return slot.name == "generator"; });
    return slots;
  }
  std::vector<EmaSlot> averages() override { return dmd2_->averages(); }
  int64_t draws_per_step() const override { return dmd2_->draws_per_step(); }
  double activation_memory_factor() const override { return dmd2_->activation_memory_factor(); }

  int64_t phase_of(int64_t step) const override { return path_.phase_of(step); }
  void begin_phase(int64_t phase) override {
    phase_ = phase;
    dmd2_->set_generator_training(phase == 1);
  }

  // A resumed run must walk the path it recorded.
  std::string state_json() const override { return layout().dump(); }
  void restore_state(const std::string& json) override {
    const auto saved = nlohmann::json::parse(json), now = layout();
    for (const auto& [key, value] : now.items())
      DISTILLERY_CHECK(!saved.contains(key) || saved[key] == value, Error("a DisBack run keeps its degradation path when it resumes").file(config_.source())
                                                                        .field(key).expected(saved[key].dump()).got(value.dump()));
  }

  std::map<std::string, double> step(StepContext& context) override {
    if (context.phase == 0) {
      if (const auto k = path_.checkpoint_taken_before(context.step); k > 0) checkpoints_[static_cast<size_t>(k - 1)]->copy_weights_from(dmd2_->critic());
      return dmd2_->step(context);
    }
    const auto target = path_.target_at(context.step);
    dmd2_->set_real_score(target == 0 ? nullptr : checkpoints_[static_cast<size_t>(target - 1)].get());
    auto stats = dmd2_->step(context);
    stats["path_target"] = static_cast<double>(target);
    return stats;
  }
  void after_update(const StepContext& context) override { dmd2_->after_update(context); }

  std::map<std::string, std::string> output_metadata() const override { return dmd2_->output_metadata(); }
  void write_output(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata, const NetworkDenoiser* ema) override {
    dmd2_->write_output(path, metadata, ema);
  }

 private:
  nlohmann::json layout() const {
    return {{"disback.degradation_steps", path_.degradation_steps()}, {"disback.path_checkpoints", path_.checkpoints()}};
  }

  Config config_;
  DisbackPath path_;
  std::unique_ptr<Dmd2Training> dmd2_;
  std::vector<std::unique_ptr<NetworkDenoiser>> checkpoints_;  // s_1 … s_{N−1}; s_N is the critic as phase 1 starts
  int64_t phase_ = 0;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_disback(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<Disback>(config, teacher, device);
}

}  // namespace distillery
