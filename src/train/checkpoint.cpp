#include "train/checkpoint.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "io/atomic_file.h"
#include "io/directory_lock.h"
#include "io/tensor_file.h"
#include "models/weights.h"
#include "train/run_options.h"

namespace distillery {

namespace {

std::string step_name(int64_t step) { return fmt::format("step-{:07d}", step); }

// Per checkpoint: the fingerprint of every weight and optimiser file, so that bits flipped on
// disk are found on resume (the safetensors framing alone does not cover the tensor bytes).
constexpr const char* kChecksums = "checksums.json";

// Checkpoints written before checksums existed have none and are taken as they are.
void verify_checksums(const std::filesystem::path& checkpoint) {
  const auto path = checkpoint / kChecksums;
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path);
  const auto checksums = nlohmann::json::parse(in, nullptr, false);
  DISTILLERY_CHECK(checksums.is_object(), Error("the checkpoint's checksums are unreadable").file(path.string()));
  for (const auto& [name, expected] : checksums.items()) {
    const auto file = checkpoint / name;
    DISTILLERY_CHECK(expected.is_string() && name.find('/') == std::string::npos && std::filesystem::is_regular_file(file),
                     Error("a file the checkpoint lists is missing").file(file.string()));
    const auto actual = file_fingerprint(file);
    DISTILLERY_CHECK(actual == expected.get<std::string>(), Error("checkpoint file is damaged (its checksum differs)").file(file.string())
                                                                .expected(expected.get<std::string>()).got(actual));
  }
}

// "a.b: old → new" for every leaf that differs between two resolved recipes.
void collect_changes(const nlohmann::json& before, const nlohmann::json& after, const std::string& prefix, std::vector<std::string>& changes) {
  if (before.is_object() && after.is_object()) {
    std::set<std::string> keys;
    for (const auto& item : before.items()) keys.insert(item.key());
    for (const auto& item : after.items()) keys.insert(item.key());
    for (const auto& key : keys)
      collect_changes(before.value(key, nlohmann::json()), after.value(key, nlohmann::json()), prefix.empty() ? key : prefix + "." + key, changes);
  } else if (before != after) {
    changes.push_back(fmt::format("{}: {} → {}", prefix, before.dump(), after.dump()));
  }
}

// A resumed run may change its recipe (more steps, a final decay): the run directory keeps every
// recipe it was trained under, so its history stays reproducible.
void keep_previous_recipe(const std::filesystem::path& out_dir, const Config& config) {
  const auto current = out_dir / "config.json";
  if (!std::filesystem::exists(current)) return;
  std::ifstream in(current);
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  const auto before = nlohmann::json::parse(text, nullptr, false);
  const auto after = nlohmann::json::parse(config.to_json());
  if (before == after) return;
  std::vector<std::string> changes;
  collect_changes(before, after, "", changes);
  int index = 1;
  while (std::filesystem::exists(out_dir / fmt::format("config.before-resume-{}.json", index))) ++index;
  const auto kept = out_dir / fmt::format("config.before-resume-{}.json", index);
  write_file_atomic(kept, text);
  spdlog::warn("resuming with a changed recipe ({}); the previous one is kept as {}", fmt::join(changes, "; "), kept.string());
}

// inputs.json holds the fingerprints of what the run was started from.
void check_run_inputs(const TrainingRunOptions& options) {
  const auto path = options.out_dir / "inputs.json";
  const nlohmann::json current(options.inputs);
  if (options.resume && std::filesystem::exists(path)) {
    std::ifstream in(path);
    const auto recorded = nlohmann::json::parse(in, nullptr, false);
    for (const auto& [name, fingerprint] : options.inputs) {
      const auto before = recorded.is_object() && recorded.contains(name) && recorded[name].is_string() ? recorded[name].get<std::string>() : std::string();
      if (before.empty() || before == fingerprint) continue;
      DISTILLERY_CHECK(options.allow_changed_inputs, Error(fmt::format("the run was started with another {}", name)).file(options.out_dir.string())
                                                         .expected(fmt::format("{} with fingerprint {} (inputs.json)", name, before)).got(fingerprint)
                                                         .hint(fmt::format("resume with the {} the run was started with, or pass --allow-changed-inputs", name)));
      spdlog::warn("resuming with another {} (fingerprint {} → {}), as --allow-changed-inputs asks", name, before, fingerprint);
    }
  }
  write_file_atomic(path, current.dump(2) + "\n");
}

}  // namespace

std::filesystem::path prepare_run_directory(const TrainingRunOptions& options, const Config& config) {
  const auto checkpoints = options.out_dir / "checkpoints";
  DISTILLERY_CHECK(options.resume || !std::filesystem::exists(checkpoints), Error("output directory already holds a training run")
                                                                               .file(options.out_dir.string())
                                                                               .hint("pass --resume to continue it, or choose another --out"));
  std::filesystem::create_directories(checkpoints);
  if (options.resume) {
    keep_previous_recipe(options.out_dir, config);
    // Under the run's lock every temporary is a leftover of a killed write.
    remove_stale_temporaries(options.out_dir);
    remove_stale_temporaries(options.out_dir / "grids");
  }
  check_run_inputs(options);
  write_file_atomic(options.out_dir / "config.json", config.to_json() + "\n");
  return checkpoints;
}

void write_checkpoint(const std::filesystem::path& dir, int64_t step, const CheckpointModules& parts, const std::string& state_json, int64_t keep) {
  const auto final_dir = dir / step_name(step);
  const auto tmp = temporary_sibling(final_dir);
  std::filesystem::remove_all(tmp);
  std::filesystem::create_directories(tmp);
  for (const auto& m : parts.modules) save_tensor_file(tmp / (m.name + ".safetensors"), module_tensors(*m.module), m.metadata);
  for (const auto& o : parts.optimizers)
    save_tensor_file(tmp / (o.name + ".safetensors"), optimizer_state_tensors(o.spec, *o.optimizer, *o.optimized),
                     {{"format", "distillery.optimizer"}, {"format_version", "1"}, {"kind", o.spec.kind}});
  write_file_atomic(tmp / "state.json", state_json + "\n");
  nlohmann::json checksums = nlohmann::json::object();
  for (const auto& entry : std::filesystem::directory_iterator(tmp)) checksums[entry.path().filename().string()] = file_fingerprint(entry.path());
  write_file_atomic(tmp / kChecksums, checksums.dump(2) + "\n");
  std::filesystem::remove_all(final_dir);
  publish_atomically(tmp, final_dir);
  std::vector<std::filesystem::path> all;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().starts_with("step-")) all.push_back(entry.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) std::filesystem::remove_all(all[i]);
}

std::optional<std::string> read_newest_checkpoint(const std::filesystem::path& dir, const CheckpointPreparation& prepare) {
  if (!std::filesystem::exists(dir)) return std::nullopt;
  remove_stale_temporaries(dir);
  std::vector<std::filesystem::path> all;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().starts_with("step-")) all.push_back(entry.path());
  std::sort(all.rbegin(), all.rend());
  std::string newest_problem;
  for (const auto& candidate : all) {
    try {
      std::ifstream in(candidate / "state.json");
      const std::string state((std::istreambuf_iterator<char>(in)), {});
      const auto json = nlohmann::json::parse(state, nullptr, false);
      DISTILLERY_CHECK(json.contains("step"), Error("state.json is missing or has no step").file(candidate.string()));
      verify_checksums(candidate);
      // Checkpoints written before state.json had a checksum: their step must at least be their folder's.
      const auto& step = json.at("step");
      DISTILLERY_CHECK(!step.is_number_integer() || step_name(step.get<int64_t>()) == candidate.filename().string(),
                       Error("state.json's step is not the step its checkpoint is named for").file((candidate / "state.json").string())
                           .expected(candidate.filename().string()).got(fmt::format("step {}", step.dump())));
      const auto parts = prepare(state);
      for (const auto& m : parts.modules) {
        const auto path = candidate / (m.name + ".safetensors");
        load_module_tensors(*m.module, load_tensor_file(path).tensors, path.string());
      }
      for (const auto& o : parts.optimizers) {
        const auto path = candidate / (o.name + ".safetensors");
        const auto file = load_tensor_file(path);
        const auto kind = file.metadata.find("kind");  // files from before the choice of optimiser hold Adam's state
        DISTILLERY_CHECK(kind == file.metadata.end() ? o.spec.kind == "adam" : kind->second == o.spec.kind,
                         Error("the checkpoint holds another optimiser's state").file(path.string()).expected(o.spec.kind)
                             .got(kind == file.metadata.end() ? "adam" : kind->second).hint("resume with the optimizer.kind the run was started with"));
        load_optimizer_state(o.spec, *o.optimizer, *o.optimized, file.tensors, path.string());
      }
      return state;
    } catch (const std::exception& e) {
      spdlog::warn("checkpoint {} is unusable ({}); trying an older one", candidate.string(), e.what());
      if (newest_problem.empty()) newest_problem = e.what();
    }
  }
  // Starting afresh over checkpoints that exist would silently throw the run's work away.
  DISTILLERY_CHECK(all.empty(), Error("no checkpoint of the run can be resumed").file(dir.string()).got(newest_problem)
                                    .hint("mend the named problem, or start the run in a new --out"));
  return std::nullopt;
}

StatsLog::StatsLog(const std::filesystem::path& path, int64_t resumed_step) {
  std::string kept;
  if (std::ifstream previous(path); previous) {
    for (std::string line; std::getline(previous, line);) {
      const auto entry = nlohmann::json::parse(line, nullptr, false);
      if (entry.is_object() && entry.value("step", INT64_MAX) <= resumed_step) kept += line + "\n";
    }
  }
  write_file_atomic(path, kept);
  out_.open(path, std::ios::app);
}

void StatsLog::write(const std::string& json_line) { out_ << json_line << "\n" << std::flush; }

}  // namespace distillery
