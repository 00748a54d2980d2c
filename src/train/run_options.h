// defines: TrainingRunOptions
// What every training command takes: a YAML recipe, overrides, the run directory, resume, and
// the runtime (device, ranks) it runs in.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/runtime.h"

namespace distillery {

struct TrainingRunOptions {
  std::filesystem::path config_file;   // YAML recipe
  std::vector<std::string> overrides;  // --set key=value
  std::filesystem::path out_dir;
  bool resume = false;                 // continue from the newest valid checkpoint in out_dir
  // The files the run is made from (the teacher), as name → content fingerprint: a resume with
  // other files would silently train a mixture of two runs, so it is refused unless allowed.
  std::map<std::string, std::string> inputs = {};
  bool allow_changed_inputs = false;
  bool show_progress = true;
  bool check_memory = true;  // refuse a batch whose estimate exceeds the device's free memory
  Runtime runtime;
};

}  // namespace distillery
