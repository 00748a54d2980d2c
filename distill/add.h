// defines: add_add_fields, add_classifier_features, add_score_distillation_weight, make_add
// Adversarial diffusion distillation, ADD (Sauer et al. 2023, "Adversarial Diffusion
// Distillation"): adversarial distillation (distill/common/adversarial_distillation.h) whose
// discriminator is a frozen feature network of clean images with trainable heads on several of
// its layers (ADD's DINOv2 is here the Fashion-MNIST classifier, add.classifier, taps conv1,
// conv2, conv3 and features), plus the teacher's score distillation: the generated image x̂ is
// re-noised to a σ of the teacher's grid (uniform over add.distill_range of a 1000-point Karras
// grid, as ADD's uniform timestep) and pulled toward the teacher's denoised estimate of it,
// add.distill_weight · mean(c(σ)·‖x̂ − sg(D_teacher(x̂ + σ·ε; σ))‖²) (per-element mean), with
// ADD's weighting c = α_t, the signal scale of the variance-preserving process at the same
// noise-to-signal ratio: c(σ) = 1/√(1 + σ²/σ_data²).
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "distill/common/adversarial_distillation.h"

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

void add_add_fields(ConfigSchema& schema);

// The classifier of add.classifier (frozen, on `device`) as the discriminator's feature network
// at adversarial.taps.
FrozenFeatures add_classifier_features(const Config& config, const c10::Device& device);

// ADD's weighting c(σ) of the score-distillation term: 1/√(1 + σ²/σ_data²).
double add_score_distillation_weight(double sigma, double sigma_data);

// `teacher`: a teacher spec (teacher.h); the config holds student.*, adversarial.*, add.*,
// data.* (the real images) and model.* (scratch).
std::unique_ptr<TrainingMethod> make_add(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
