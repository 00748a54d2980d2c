// defines: ShuffledOrder
// An endless stream of example indices: position p lies in epoch p / N, and each epoch is a
// permutation drawn from (seed, epoch) alone. Any position can be looked up without replaying
// the stream, which is what makes training and readers resumable at an exact batch.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace distillery {

class ShuffledOrder {
 public:
  ShuffledOrder(int64_t size, uint64_t seed);
  int64_t at(int64_t position);

 private:
  int64_t size_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  at::Tensor permutation_;  // of the cached epoch
};

}  // namespace distillery
