// defines: add_msd_fields, msd_route, make_msd
// Multi-student distillation, MSD (Song et al. 2024, "Multi-student Diffusion Distillation for
// Better One-step Generators"): the classes of a class-conditional teacher are split among K
// one-step students, and each student is distilled (DMD2 or ADD, msd.method) on its classes
// only, so its capacity goes to fewer modes. The students train one after another, each for
// its share of train.steps, as phases of the trainer (a resumed run continues the student it
// stopped in). Students may be smaller than the teacher (msd.model_channels): such a student
// starts from scratch and first learns the teacher's denoiser on its classes by teacher score
// matching (EDM-weighted regression of D_student(x0 + σn) onto D_teacher(x0 + σn), real x0,
// log-normal σ, msd.score_matching_steps of its share), then is distilled with every network
// the method builds from the student (DMD2's critic too) starting from that result. The output
// is one file holding all students and the route from class to student
// (models/routed_denoiser.h), which `generate`, `eval` and `report` use as one model.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

// msd.* plus the keys of the methods it runs (dmd2.*, add.* and adversarial.*).
void add_msd_fields(ConfigSchema& schema);

// The student of each of `num_classes` classes: msd.assignment when given (checked: every
// student gets a class), else contiguous blocks of ⌈C/K⌉ or ⌊C/K⌋ classes in order.
std::vector<int64_t> msd_route(const Config& config, int64_t num_classes);

std::unique_ptr<TrainingMethod> make_msd(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
