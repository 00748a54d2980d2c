// defines: add_student_fields, distillation_schema, distillation_method_names, load_distillation_config,
//          make_distillation_method, run_distillation
// Maps `method:` names in distillation recipes to their implementations. A recipe's schema is
// the keys every method shares (the trainer's, in-loop evaluation, the student network
// model.* and precond.*, student.*, data.*) plus the chosen method's own: `method` is read
// first, so a key of another method is an unknown key and config.json lists only what applies.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "train/run_options.h"

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

// student.init and student.sigmas, which every method reads the same way.
void add_student_fields(ConfigSchema& schema);

// The common keys plus `method`'s own; Error listing the methods for an unknown one.
const ConfigSchema& distillation_schema(std::string_view method);
std::vector<std::string> distillation_method_names();
// The recipe with its overrides, checked against the schema of the method it names.
Config load_distillation_config(const std::filesystem::path& recipe, const std::vector<std::string>& overrides);
std::unique_ptr<TrainingMethod> make_distillation_method(const Config& config, const std::string& teacher, const c10::Device& device);

// Loads the recipe, builds its method for `teacher` and runs the trainer.
void run_distillation(const TrainingRunOptions& options, const std::string& teacher);

}  // namespace distillery
