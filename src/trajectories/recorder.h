// defines: RecordOptions, RecordSummary, record_trajectories
// `distillery record`: runs a teacher's sampler and stores its trajectories shard by shard.
// The noise, label and churn of trajectory i depend only on (seed, i), so a shard is the same
// whichever process records it, whenever: a killed recording resumes by recording the shards
// the manifest lacks, and `--part i/n` splits the shards between processes or machines that
// share the directory, with no coordination beyond the manifest's file lock.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "samplers/sampling.h"

namespace distillery {

struct RecordOptions {
  std::string teacher;            // a teacher spec (teachers/teacher.h)
  SampleRequest request;          // solver, σ grid, seed, num, batch, labels, guidance, churn
  std::string store = "full";     // full | endpoints | every:K
  bool denoised = false;          // also store D(x_i; σ_i) at the stored states with σ > 0
  std::string dtype = "float32";  // float32 | float16
  int64_t compression = 0;        // deflate level 0..9 (with the shuffle filter)
  int64_t shard_size = 256;       // trajectories per shard: a kill loses at most the shard being sampled and the one being written
  int64_t part = 0, parts = 1;    // record only shards k with k mod parts = part
  bool resume = false;            // continue the store already in `out`
  std::filesystem::path out;
  bool show_progress = true;
  c10::Device device = c10::Device(c10::DeviceType::CPU);  // where the teacher runs; states are stored from the host
  bool cuda_graph = false;        // replay the teacher as CUDA graphs (models/cuda_graph_denoiser.h)
};

struct RecordSummary {
  int64_t shards_written = 0, shards_already_done = 0, trajectories_written = 0;
  double seconds = 0;        // wall time
  double io_seconds = 0;     // the part of it spent waiting for shard and manifest writes
  double write_seconds = 0;  // time the writer thread spent writing (overlaps sampling)
  int64_t max_rss_kb = 0;
};

RecordSummary record_trajectories(const RecordOptions& options);

}  // namespace distillery
