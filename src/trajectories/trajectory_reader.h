// defines: StoreExpectation, TrajectoryReader
// Training-side access to a complete trajectory store: (noise, sample, label) pairs, whole
// trajectories, the teacher's denoised states, and random pairs of states from one trajectory,
// for any sample indices, across shards. Memory stays bounded: a few shard files are open at a
// time and only the requested rows are read (one HDF5 chunk per trajectory). Each shard's
// checksum is verified the first time it is opened, so corruption is an error, not data.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/shuffled_order.h"
#include "trajectories/trajectory_store.h"

namespace distillery {

class H5File;

// What a reader's caller needs from the store; empty fields are not checked.
struct StoreExpectation {
  std::string teacher_hash = {};      // teacher_fingerprint of the caller's teacher
  std::vector<int64_t> sample_shape = {};
  bool denoised = false;              // the store must hold the teacher's denoised states
};

class TrajectoryReader {
 public:
  explicit TrajectoryReader(const std::filesystem::path& dir, const StoreExpectation& expect = {});
  ~TrajectoryReader();

  const StoreSettings& settings() const { return settings_; }
  int64_t size() const { return settings_.num; }
  std::vector<double> sigmas() const { return settings_.stored_sigmas(); }  // of the stored states

  struct Pairs {
    at::Tensor noise;   // [k, *shape], unit variance: the initial state / σ_max
    at::Tensor sample;  // [k, *shape], the last state
    at::Tensor labels;  // [k] int64, −1 when unconditional
  };
  Pairs pairs(const std::vector<int64_t>& indices);
  at::Tensor trajectories(const std::vector<int64_t>& indices);  // [k, T, *shape] float32
  at::Tensor denoised(const std::vector<int64_t>& indices);      // [k, T − 1, *shape] float32
  at::Tensor labels(const std::vector<int64_t>& indices);

  // For each index, stored states i < j of its trajectory drawn uniformly from (seed, index).
  struct StatePairs {
    at::Tensor sigma_i, x_i, sigma_j, x_j;  // σ [k] float64, states [k, *shape]
    at::Tensor labels;
  };
  StatePairs state_pairs(const std::vector<int64_t>& indices, uint64_t seed);

  // Batch b of an endless shuffled stream over the store (epochs reshuffled by (seed, epoch)),
  // or over the rows kept by keep_classes.
  std::vector<int64_t> batch_indices(int64_t batch_number, int64_t batch_size, uint64_t seed);

  // From now on the stream holds only the rows of these labels, in store order before shuffling
  // (a student of some classes must not learn the others'). An error names the classes when
  // the store holds none of them.
  void keep_classes(const std::vector<int64_t>& classes);

 private:
  const H5File& shard_file(int64_t shard);
  void read_row(const std::string& dataset, int64_t index, float* out);

  std::filesystem::path dir_;
  StoreSettings settings_;
  std::vector<ShardEntry> entries_;  // by shard number
  struct OpenShard {
    int64_t shard;
    std::unique_ptr<H5File> file;
    int64_t last_use;
  };
  std::vector<OpenShard> open_;
  std::vector<bool> verified_;
  int64_t uses_ = 0;
  std::optional<ShuffledOrder> order_;
  uint64_t order_seed_ = 0;
  std::optional<std::vector<int64_t>> kept_rows_;  // keep_classes's rows; all of them when unset
};

}  // namespace distillery
