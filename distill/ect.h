// defines: EctSchedule, ect_smaller_time, add_ect_fields, make_ect
// Easy consistency tuning, ECT (Geng, Pokle, Luo, Lin & Kolter 2024, "Consistency Models Made
// Easy"). Consistency training (distill/common/consistency_training.h) started from the
// teacher's network: t is log-normal (P_mean −1.1, P_std 2.0), and r = t·(1 − q^−(stage+1)·
// (1 + k·sigmoid(−b·t))), clamped at 0. Early stages put r at 0 for most t, so the loss begins as
// the teacher's own denoising loss; each stage (ect.stage_steps steps) divides the gap t − r by
// q, tightening the model toward the consistency condition dt → 0.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

struct EctSchedule {
  double q = 2.0, k = 8.0, b = 1.0;
};

// r for t at `stage` (0-based).
double ect_smaller_time(double t, int64_t stage, const EctSchedule& schedule);

void add_ect_fields(ConfigSchema& schema);
std::unique_ptr<TrainingMethod> make_ect(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
