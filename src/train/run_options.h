// defines: TrainingRunOptions
// What every training command takes: a YAML recipe, overrides, the run directory, resume, and
// the runtime (device, ranks) it runs in.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/runtime.h"

namespace distillery {

struct TrainingRunOptions {
  std::filesystem::path config_file;   // YAML recipe
  std::vector<std::string> overrides;  // --set key=value
  std::filesystem::path out_dir;
  bool resume = false;                 // continue from the newest valid checkpoint in out_dir
  bool show_progress = true;
  Runtime runtime;
};

}  // namespace distillery
