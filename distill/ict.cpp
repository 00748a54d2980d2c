#include "distill/ict.h"

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/consistency_training.h"
#include "distill/common/multistep_grids.h"
#include "distill/common/sigma_sampling.h"

namespace distillery {

void add_ict_fields(ConfigSchema& s) {
  s.add({"ict.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "1e-4"}, NumberRange::above(0));
  s.add({"ict.p_mean", ConfigType::Float, "P_mean of the discretised log-normal over the grid's pairs", "-1.1"});
  s.add({"ict.p_std", ConfigType::Float, "P_std of the discretised log-normal", "2.0"}, NumberRange::above(0));
  s.add({"ict.s0", ConfigType::Int, "the curriculum's first N (grid of s0 + 1 points)", "10"}, NumberRange::between(1, 100000));
  s.add({"ict.s1", ConfigType::Int, "the curriculum's last N", "1280"}, NumberRange::between(1, 100000));
  s.add({"ict.curriculum_steps", ConfigType::Int, "K of the curriculum (0: train.steps)", "0"}, NumberRange::between(0, 1e12));
  s.add({"ict.rho", ConfigType::Float, "ρ of the Karras grid", "7"}, NumberRange::above(0));
  add_multistep_fields(s);
  s.add({"ict.huber_c", ConfigType::Float, "pseudo-Huber c (0: iCT's 0.00054·√d)", "0"}, NumberRange::at_least(0));
}

namespace {

class ImprovedConsistencyTraining final : public ConsistencyTraining {
 public:
  ImprovedConsistencyTraining(const Config& config, const std::string& teacher, const c10::Device& device)
      : ConsistencyTraining(config, teacher, device, config.get_float("ict.lr"), config.get_float("ict.huber_c")),
        p_mean_(config.get_float("ict.p_mean")),
        p_std_(config.get_float("ict.p_std")),
        rho_(config.get_float("ict.rho")),
        s0_(config.get_int("ict.s0")),
        s1_(config.get_int("ict.s1")),
        curriculum_steps_(config.get_int("ict.curriculum_steps") > 0 ? config.get_int("ict.curriculum_steps") : config.get_int("train.steps")) {
    DISTILLERY_CHECK(s1_ >= s0_, Error("iCT's curriculum must grow").file(config.source()).field("ict.s1")
                                     .expected(fmt::format("at least ict.s0 ({})", s0_)).got(std::to_string(s1_)));
  }

 protected:
  ConsistencyTimes times(const StepContext& context, const std::vector<int64_t>& positions) const override {
    const auto points = ict_discretization_steps(context.step, curriculum_steps_, s0_, s1_);
    const auto grid = karras_grid_ascending(sigma_min(), sigma_max(), rho_, points);
    const auto pairs = DiscretizedLognormal(grid, p_mean_, p_std_).draw(context.seed, noise_stream::consistency_pair, positions);
    ConsistencyTimes times;
    for (const auto i : pairs) {
      times.r.push_back(grid[static_cast<size_t>(i)]);
      times.t.push_back(grid[static_cast<size_t>(i) + 1]);
    }
    return times;
  }

 private:
  double p_mean_, p_std_, rho_;
  int64_t s0_, s1_, curriculum_steps_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_ict(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<ImprovedConsistencyTraining>(config, teacher, device);
}

}  // namespace distillery
