// defines: RealDataStream
// Real examples for a method that needs them besides its teacher (DMD2's GAN, adversarial
// distillation, consistency training without a teacher): the data.* set as an endless
// reshuffled stream, indexed by global sample position like every other draw, so a batch is
// the same whatever the number of ranks. Optional horizontal flips are counter-based too.
// The set stays on the host; each batch moves to the device.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "data/shuffled_order.h"
#include "data/training_data.h"

namespace distillery {

class Config;

class RealDataStream {
 public:
  // Loads data.* for a network of `sample_shape` with `num_classes` classes (0: unconditional)
  // and checks that shapes and labels fit it; `flip_stream` draws the flips (data.hflip). With
  // `classes` (student_classes) only the examples of those classes are kept.
  RealDataStream(const Config& config, const std::vector<int64_t>& sample_shape, int64_t num_classes, uint64_t flip_stream, const c10::Device& device,
                 const std::vector<int64_t>& classes = {});

  // The examples at the positions and their labels (undefined when unconditional).
  std::pair<at::Tensor, at::Tensor> batch(uint64_t seed, const std::vector<int64_t>& positions);
  int64_t size() const { return data_.x0.size(0); }

 private:
  TrainingData data_;
  std::optional<ShuffledOrder> order_;
  int64_t num_classes_;
  uint64_t flip_stream_;
  bool hflip_;
  c10::Device device_;
};

}  // namespace distillery
