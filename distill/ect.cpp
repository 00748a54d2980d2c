#include "distill/ect.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/consistency_training.h"
#include "distill/common/multistep_grids.h"
#include "distill/common/sigma_sampling.h"

namespace distillery {

double ect_smaller_time(double t, int64_t stage, const EctSchedule& s) {
  const double sigmoid = 1.0 / (1.0 + std::exp(s.b * t));
  return std::max(0.0, t * (1.0 - std::pow(s.q, -static_cast<double>(stage + 1)) * (1.0 + s.k * sigmoid)));
}

void add_ect_fields(ConfigSchema& s) {
  s.add({"ect.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*; ECT: RAdam 1e-4 at batch 128)", "1e-4"}, NumberRange::above(0));
  s.add({"ect.p_mean", ConfigType::Float, "mean of ln t", "-1.1"});
  s.add({"ect.p_std", ConfigType::Float, "standard deviation of ln t", "2.0"}, NumberRange::above(0));
  s.add({"ect.q", ConfigType::Float, "the gap t − r shrinks by q at every stage", "2"}, NumberRange::above(1));
  s.add({"ect.k", ConfigType::Float, "k of the mapping's 1 + k·sigmoid(−b·t)", "8"}, NumberRange::at_least(0));
  s.add({"ect.b", ConfigType::Float, "b of the mapping's 1 + k·sigmoid(−b·t)", "1"}, NumberRange::at_least(0));
  s.add({"ect.stage_steps", ConfigType::Int, "training steps per stage (ECT on CIFAR-10: 250k images)", "2000"}, NumberRange::between(1, 1e12));
  add_multistep_fields(s);
  s.add({"ect.huber_c", ConfigType::Float, "pseudo-Huber c (0: iCT's 0.00054·√d)", "0"}, NumberRange::at_least(0));
}

namespace {

class EasyConsistencyTuning final : public ConsistencyTraining {
 public:
  EasyConsistencyTuning(const Config& config, const std::string& teacher, const c10::Device& device)
      : ConsistencyTraining(config, teacher, device, config.get_float("ect.lr"), config.get_float("ect.huber_c")),
        p_mean_(config.get_float("ect.p_mean")),
        p_std_(config.get_float("ect.p_std")),
        stage_steps_(config.get_int("ect.stage_steps")),
        schedule_{config.get_float("ect.q"), config.get_float("ect.k"), config.get_float("ect.b")} {
    // Past ~30 halvings t − r is below float32's resolution of t: the pair is one point twice.
    const auto last_stage = (config.get_int("train.steps") - 1) / stage_steps_;
    DISTILLERY_CHECK(last_stage * std::log2(schedule_.q) <= 30,
                     Error("ECT's stages shrink t − r past what float32 resolves").file(config.source()).field("ect.stage_steps")
                         .expected(fmt::format("a stage length giving q^stages ≤ 2^30 over train.steps ({})", config.get_int("train.steps")))
                         .got(fmt::format("{} steps per stage: {} stages", stage_steps_, last_stage + 1)));
  }

 protected:
  ConsistencyTimes times(const StepContext& context, const std::vector<int64_t>& positions) const override {
    const auto drawn = lognormal_sigmas(context.seed, noise_stream::consistency_time, positions, p_mean_, p_std_, at::kDouble).contiguous();
    const double* t = drawn.data_ptr<double>();
    ConsistencyTimes times;
    for (size_t i = 0; i < positions.size(); ++i) {
      // The student samples from σ_max down; a t beyond it would train a level never used.
      times.t.push_back(std::clamp(t[i], sigma_min(), sigma_max()));
      times.r.push_back(ect_smaller_time(times.t.back(), context.step / stage_steps_, schedule_));
    }
    return times;
  }

 private:
  double p_mean_, p_std_;
  int64_t stage_steps_;
  EctSchedule schedule_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_ect(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<EasyConsistencyTuning>(config, teacher, device);
}

}  // namespace distillery
