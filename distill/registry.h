// defines: distillation_schema, distillation_method_names, make_distillation_method, run_distillation
// Maps `method:` names in distillation recipes to their implementations; the schema holds the
// trainer's keys, the student network's (model.*, precond.*) and every method's own.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "train/run_options.h"

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

const ConfigSchema& distillation_schema();
std::vector<std::string> distillation_method_names();
std::unique_ptr<TrainingMethod> make_distillation_method(const Config& config, const std::string& teacher);

// Loads the recipe, builds its method for `teacher` and runs the trainer.
void run_distillation(const TrainingRunOptions& options, const std::string& teacher);

}  // namespace distillery
