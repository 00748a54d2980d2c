// defines: add_ict_fields, make_ict
// Improved consistency training, iCT (Song & Dhariwal 2023, "Improved Techniques for Training
// Consistency Models"): consistency training (distill/common/consistency_training.h) on the
// adjacent pairs (σ_i, σ_{i+1}) of a Karras grid (ρ = 7) whose N(k) points grow with the step k
// as min(s0·2^⌊k/K′⌋, s1) + 1 (10 to 1280), the pair drawn from the discretised log-normal
// (P_mean −1.1, P_std 2.0), with μ = 0, pseudo-Huber c = 0.00054·√d and λ = 1/(σ_{i+1} − σ_i).
// No teacher is used beyond its σ range (and its weights when student.init is teacher).
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

void add_ict_fields(ConfigSchema& schema);
std::unique_ptr<TrainingMethod> make_ict(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
