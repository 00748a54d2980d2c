// defines: set_sampling_request, sampling_request, ShardContents, write_shard, append_manifest,
//          read_manifest, file_crc32, recorded_labels, verify_shard, read_store_settings, inspect_store, StoreReport
// The trajectory store (format v1, docs/formats.md): a directory with `store.json` (the
// recording's settings, io/store_format), HDF5 shards `shard-NNNNNN.h5` holding a fixed range of sample indices
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

#include "io/store_format.h"
#include "samplers/sampling.h"

namespace distillery {

// The one mapping between a store's settings and the sampling request that recorded it:
// set_sampling_request takes the request (with its schedule resolved for the teacher),
// sampling_request gives it back, so a reader can draw more of the same.
void set_sampling_request(StoreSettings& settings, const SampleRequest& request, const ScheduleSpec& schedule);
SampleRequest sampling_request(const StoreSettings& settings);

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

// parse_manifest of the directory's manifest.jsonl (none: no entries).
std::vector<ShardEntry> read_manifest(const std::filesystem::path& dir, std::vector<std::string>* problems = nullptr);

uint32_t file_crc32(const std::filesystem::path& path);

// The labels a store records for these sample indices: its label policy's, −1 each where the
// teacher is unconditional.
std::vector<int64_t> recorded_labels(const StoreSettings& settings, const std::vector<int64_t>& sample_indices);

// Everything wrong with a store, found without trusting any of it.
struct StoreReport {
  std::optional<StoreSettings> settings;
  std::vector<std::string> problems;  // empty: the store is complete and intact
  std::vector<std::string> notes;     // harmless findings (files a killed run left unlisted)
  int64_t shards_present = 0, trajectories_present = 0;
  uint64_t bytes_on_disk = 0;
  std::string summary() const;        // human-readable, for `distillery inspect`
};
// store.json of the store in `dir`; Error naming the file unless it is a readable, valid one.
StoreSettings read_store_settings(const std::filesystem::path& dir);

// Checks store.json, every manifest line, every shard's checksum, attributes, datasets and
// sample indices, and coverage (gaps, duplicates, strays).
StoreReport inspect_store(const std::filesystem::path& dir);

// Checks one shard file against its manifest entry and the store's settings (checksum,
// attributes, dataset shapes, sample indices); throws Error naming the problem.
void verify_shard(const std::filesystem::path& dir, const ShardEntry& entry, const StoreSettings& settings, bool check_crc = true);

}  // namespace distillery
