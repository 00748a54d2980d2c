// defines: StoreSettings, ShardEntry, stored_steps_for, shard_file_name, parse_manifest, manifest_line,
//          kStoreFormat, kStoreFormatVersion
// The text side of the trajectory store (format v1, docs/formats.md): `store.json`, the
// recording's settings, and `manifest.jsonl`, one line per finished shard. Parsing trusts
// nothing in the bytes and bounds every count before anything is sized by it. Independent of
// LibTorch and HDF5, and fuzzed; the shards themselves are trajectories/trajectory_store's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace distillery {

inline constexpr int kStoreFormatVersion = 1;
inline constexpr const char* kStoreFormat = "distillery.trajectories";

// Everything that determines a store's contents; store.json and every shard carry it, and a
// resumed or parallel recording must present the same.
struct StoreSettings {
  std::string teacher;              // the spec as given (informational; not compared)
  std::string teacher_hash;         // teacher_fingerprint of it
  std::vector<int64_t> sample_shape;
  int64_t num_classes = 0;
  std::string sampler;
  int64_t steps = 0;
  std::string schedule;
  double sigma_min = 0, sigma_max = 0, rho = 0;
  double s_churn = 0, s_tmin = 0, s_tmax = 0, s_noise = 1;
  std::string labels;               // label policy
  double guidance = 1;
  uint64_t seed = 0;
  int64_t num = 0;                  // trajectories in the whole store
  int64_t shard_size = 0;           // trajectories per shard (the last may hold fewer)
  std::string store;                // full | endpoints | every:K
  bool denoised = false;            // D(x_i; σ_i) stored at every stored state with σ_i > 0
  std::string dtype;                // float32 | float16 (states and denoised)
  int64_t compression = 0;          // deflate level, 0 = none
  std::vector<double> sigmas;       // the solver's full grid, steps + 1 values ending at 0
  std::vector<int64_t> stored_steps;  // grid indices of the stored states (first 0, last steps)

  // Indented with a final newline for store.json; on one line for a shard's attribute.
  std::string to_json(bool pretty = true) const;
  // Error naming `source` unless the text is a complete, self-consistent v1 settings object.
  static StoreSettings from_json(const std::string& text, const std::string& source);
  // The fields (other than `teacher`) that differ, e.g. "seed: 3 vs 4; steps: 18 vs 12"; nullopt if none.
  std::optional<std::string> difference(const StoreSettings& other) const;

  int64_t shard_count() const { return num / shard_size + (num % shard_size != 0); }  // no overflow for any sizes
  int64_t shard_first(int64_t shard) const { return shard * shard_size; }
  int64_t shard_length(int64_t shard) const;
  std::vector<double> stored_sigmas() const;
  int64_t denoised_states() const;  // stored states with σ > 0
};

// Grid indices kept by a --store mode ("full", "endpoints", "every:K"); Error for a bad mode.
std::vector<int64_t> stored_steps_for(const std::string& mode, int64_t steps);

std::string shard_file_name(int64_t shard);

struct ShardEntry {
  std::string file;
  int64_t shard = 0, first_index = 0, count = 0;
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};

// The lines of a manifest's text that are complete entries; the others (a torn last line after
// a kill, an edit) are skipped and described in `problems` when given.
std::vector<ShardEntry> parse_manifest(const std::string& text, std::vector<std::string>* problems = nullptr);
// One entry as a manifest line, newline included; parse_manifest reads it back exactly.
std::string manifest_line(const ShardEntry& entry);

}  // namespace distillery
