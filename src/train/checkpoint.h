// defines: CheckpointModules, prepare_run_directory, write_checkpoint, read_newest_checkpoint, RunCounters, resume_newest_checkpoint, StatsLog
// Training checkpoints shared by every trainer: a directory per step (`step-NNNNNNN/`) with
// one safetensors file per module, one per optimiser (train/optimizer.h), `checksums.json`
// (each file's fingerprint) and `state.json`, written under a hidden temporary name and
// renamed, the newest `keep` kept. Reading takes the newest checkpoint whose files match their
// checksums and load completely, and falls back to older ones.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "train/optimizer.h"

namespace torch::nn { class Module; }
namespace torch::optim { class Optimizer; }

namespace distillery {

class Config;
struct TrainingRunOptions;

// A module saved as <name>.safetensors with the given metadata (a denoiser's, so that the
// file is itself a usable model).
struct CheckpointModule {
  std::string name;
  torch::nn::Module* module;
  std::map<std::string, std::string> metadata = {};
};

// An optimiser's state keyed by the parameter names of `optimized` (the module it updates),
// saved as <name>.safetensors.
struct CheckpointOptimizer {
  std::string name;
  torch::nn::Module* optimized;
  torch::optim::Optimizer* optimizer;
  OptimizerSpec spec;
};

struct CheckpointModules {
  std::vector<CheckpointModule> modules;
  std::vector<CheckpointOptimizer> optimizers = {};
};

// Refuses an existing run unless resuming, creates <out>/checkpoints and writes the resolved
// recipe as <out>/config.json (a resumed run whose recipe changed keeps the previous one as
// config.before-resume-K.json and logs the changed keys) and the inputs' fingerprints as
// <out>/inputs.json (a resume with other inputs is refused unless allowed); a resume removes
// the temporaries of killed writes. Returns the checkpoints directory. The caller holds the
// directory's lock.
std::filesystem::path prepare_run_directory(const TrainingRunOptions& options, const Config& config);

// `state_json`: a JSON object that must contain "step".
void write_checkpoint(const std::filesystem::path& dir, int64_t step, const CheckpointModules& parts, const std::string& state_json, int64_t keep);

// The state.json text of the newest checkpoint that loads completely (falling back to older
// ones), or nullopt when there is none; Error when there are some and none loads. `prepare` is
// given each candidate's state.json first and returns the parts to load it into (a run in
// another phase has other parts). Leftover temporaries of killed runs are removed.
using CheckpointPreparation = std::function<CheckpointModules(const std::string& state_json)>;
std::optional<std::string> read_newest_checkpoint(const std::filesystem::path& dir, const CheckpointPreparation& prepare);

// stats.jsonl of a run: on (re)start only the lines of steps ≤ `resumed_step` are kept (none
// for −1, a fresh start; a line torn by a kill is dropped), so a resumed run's log equals an
// uninterrupted run's.
class StatsLog {
 public:
  StatsLog(const std::filesystem::path& path, int64_t resumed_step);
  void write(const std::string& json_line);

 private:
  std::ofstream out_;
};

}  // namespace distillery
