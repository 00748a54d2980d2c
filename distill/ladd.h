// defines: add_ladd_fields, make_ladd
// Latent adversarial diffusion distillation, LADD (Sauer et al. 2024, "Fast High-Resolution
// Image Synthesis with Latent Adversarial Diffusion Distillation"): adversarial distillation
// (distill/common/adversarial_distillation.h) whose discriminator reads the teacher's own
// features. Real and generated images are noised to σ before the frozen teacher sees them, one
// independent draw per side; the heads sit on its taps (UNet: enc.<k>, bottleneck, dec.<k>;
// MLP: layer.<k>), and are told that σ with adversarial.noise_conditional, as the paper's are.
// No other network is needed, so it is the default adversarial method.
// LADD draws the noise level from a logit-normal in rectified-flow time, t = sigmoid(m + s·n);
// since σ = t/(1 − t), that is σ = exp(m + s·n), a log-normal in EDM's σ (ladd.sigma_mean = m,
// ladd.sigma_std = s; the paper's m = 1, s = 1 favours the high noise levels that carry global
// structure). Following the paper the student has no distillation loss of its own by default:
// the adversarial loss alone, with the R1 penalty on the real side. ladd.distill_weight > 0 adds
// ADD's score distillation toward the same teacher (distill/common/score_distillation.h).
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

void add_ladd_fields(ConfigSchema& schema);

// `teacher`: a network teacher (teacher.h) whose features the discriminator reads; the config
// holds student.*, adversarial.*, ladd.*, data.* (the real images) and model.* (scratch).
std::unique_ptr<TrainingMethod> make_ladd(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
