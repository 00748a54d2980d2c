// defines: add_add_fields, make_add
// Adversarial diffusion distillation, ADD (Sauer et al. 2023, "Adversarial Diffusion
// Distillation"): adversarial distillation (distill/common/adversarial_distillation.h) whose
// discriminator is a frozen feature network of clean images with trainable heads on several of
// its layers (ADD's DINOv2 is here the Fashion-MNIST classifier, add.classifier, taps conv1,
// conv2, conv3 and features), plus the teacher's score distillation
// (distill/common/score_distillation.h, add.distill_weight λ = 2.5 and add.distill_range).
// Optionally also the regression of the student's one step onto the teacher's ODE solutions of a
// trajectory store (add.regression_weight, add.distance), the term the multi-student paper
// distils its smaller students with: neither the heads nor the score distillation reward
// covering every mode, and a student that does not start as the teacher escapes to a few.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

void add_add_fields(ConfigSchema& schema);

// `teacher`: a teacher spec (teacher.h); the config holds student.*, adversarial.*, add.*,
// data.* (the real images) and model.* (scratch).
std::unique_ptr<TrainingMethod> make_add(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
