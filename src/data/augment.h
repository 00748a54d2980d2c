// defines: hflip_per_sample, drop_labels_per_sample
// What a training step does to its batch at random: flips of the images, and label dropout
// for classifier-free guidance. Each draw is keyed by the row's sample position, like the noise.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace distillery {

// Row r of [N, C, H, W] mirrored left-right with probability ½, drawn for sample position
// positions[r] from (seed, stream): the same flips whatever the batch, the process count or
// the device.
at::Tensor hflip_per_sample(const at::Tensor& images, uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions);

// `labels` ([N] int64) with row r's label replaced by −1, "no label", with probability
// `probability`, drawn for positions[r] from (seed, stream).
at::Tensor drop_labels_per_sample(const at::Tensor& labels, double probability, uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions);

}  // namespace distillery
