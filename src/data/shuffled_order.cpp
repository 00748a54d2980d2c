#include "data/shuffled_order.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/types.h>

#include "core/error.h"
#include "core/hash.h"

namespace distillery {

ShuffledOrder::ShuffledOrder(int64_t size, uint64_t seed) : size_(size), seed_(seed) {
  DISTILLERY_CHECK(size > 0, Error("cannot shuffle an empty dataset"));
}

int64_t ShuffledOrder::at(int64_t position) {
  const int64_t epoch = position / size_;
  if (epoch != epoch_) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(fnv1a64(fmt::format("{}:{}", seed_, epoch)));
    permutation_ = torch::randperm(size_, generator, torch::kInt64);
    epoch_ = epoch;
  }
  return permutation_[position % size_].item<int64_t>();
}

}  // namespace distillery
