// defines: StoreSettings, ShardEntry, StoreLayout, stored_steps_for, shard_file_name, write_shard,
//          append_manifest, read_manifest, file_crc32, inspect_store, StoreReport
// The trajectory store (format v1, docs/formats.md): a directory with `store.json` (the
// recording's settings), HDF5 shards `shard-NNNNNN.h5` holding a fixed range of sample indices
// each, and `manifest.jsonl`, one line per finished shard. A shard is complete before its
// name exists (written under a temporary name, fsynced, renamed) and counts only once its
// manifest line has been appended and fsynced.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "samplers/sampling.h"

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

  // The one mapping between a store's settings and the sampling request that recorded it:
  // set_request takes the request (with its schedule resolved for the teacher), request()
  // gives it back, so a reader can draw more of the same.
  void set_request(const SampleRequest& request, const ScheduleSpec& schedule);
  SampleRequest request() const;

  std::string to_json() const;
  static StoreSettings from_json(const std::string& text, const std::string& source);
  // The fields (other than `teacher`) that differ, e.g. "seed: 3 vs 4; steps: 18 vs 12"; nullopt if none.
  std::optional<std::string> difference(const StoreSettings& other) const;

  int64_t shard_count() const { return (num + shard_size - 1) / shard_size; }
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

// The arrays of one shard; x and denoised are float32 in memory, stored as settings.dtype.
struct ShardContents {
  at::Tensor x;             // [n, T, *shape]
  at::Tensor denoised;      // [n, T', *shape] or undefined
  at::Tensor sample_index;  // [n] int64
  at::Tensor labels;        // [n] int64, −1 when unconditional
};

// Writes the shard under a temporary name, fsyncs and renames it; returns its manifest entry.
ShardEntry write_shard(const std::filesystem::path& dir, const StoreSettings& settings, int64_t shard, const ShardContents& contents);

// Appends one line under an exclusive lock and fsyncs, so concurrent recorders never interleave.
void append_manifest(const std::filesystem::path& dir, const ShardEntry& entry);

// The parsed lines; malformed ones (a torn last line after a kill) are skipped and described in
// `problems` when given.
std::vector<ShardEntry> read_manifest(const std::filesystem::path& dir, std::vector<std::string>* problems = nullptr);

uint32_t file_crc32(const std::filesystem::path& path);

// Everything wrong with a store, found without trusting any of it.
struct StoreReport {
  std::optional<StoreSettings> settings;
  std::vector<std::string> problems;  // empty: the store is complete and intact
  std::vector<std::string> notes;     // harmless findings (files a killed run left unlisted)
  int64_t shards_present = 0, trajectories_present = 0;
  uint64_t bytes_on_disk = 0;
  std::string summary() const;        // human-readable, for `distillery inspect`
};
// Checks store.json, every manifest line, every shard's checksum, attributes, datasets and
// sample indices, and coverage (gaps, duplicates, strays).
StoreReport inspect_store(const std::filesystem::path& dir);

// Checks one shard file against its manifest entry and the store's settings (checksum,
// attributes, dataset shapes, sample indices); throws Error naming the problem.
void verify_shard(const std::filesystem::path& dir, const ShardEntry& entry, const StoreSettings& settings, bool check_crc = true);

}  // namespace distillery
