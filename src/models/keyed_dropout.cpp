#include "models/keyed_dropout.h"

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#include "core/error.h"
#include "core/rng.h"

namespace distillery {

namespace {
thread_local DropoutKeys* active_keys = nullptr;
}

DropoutKeys::DropoutKeys(uint64_t seed, uint64_t stream, std::vector<int64_t> positions)
    : seed_(seed), stream_(stream), positions_(std::move(positions)), outer_(active_keys) {
  active_keys = this;
}

DropoutKeys::~DropoutKeys() { active_keys = outer_; }

at::Tensor keyed_dropout(const at::Tensor& x, double p, bool training) {
  if (!training || p == 0) return x;
  DISTILLERY_CHECK(p > 0 && p < 1, Error("dropout probability out of range").expected("in [0, 1)").got(std::to_string(p)));
  auto* keys = active_keys;
  DISTILLERY_CHECK(keys, Error("dropout in training mode needs the sample positions of the batch").hint("the training step opens a DropoutKeys scope"));
  const auto rows = static_cast<int64_t>(keys->positions_.size());
  DISTILLERY_CHECK(x.dim() >= 1 && x.size(0) == rows, Error("a dropout layer saw another batch than its training step")
                                                          .expected(std::to_string(rows) + " rows").got(std::to_string(x.dim() ? x.size(0) : 0)));
  DISTILLERY_CHECK(keys->layers_met_ < noise_stream::dropout_layers,
                   Error("one pass meets more dropout layers than keyed masks tell apart").expected(std::to_string(noise_stream::dropout_layers)));
  const uint64_t stream = keys->stream_ + keys->layers_met_++;
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(keys->seed_), static_cast<uint32_t>(keys->seed_ >> 32)};
  // An element is kept when the top 24 bits of its Philox word reach p·2²⁴: probability 1 − p
  // up to 2⁻²⁴, in integers, so every host agrees.
  const auto threshold = static_cast<uint32_t>(std::ceil(p * 0x1p24));
  auto keep = torch::empty(x.sizes(), torch::kUInt8);  // filled on the host, whatever x's device, then copied
  const int64_t per_row = x.numel() / std::max<int64_t>(rows, 1);
  uint8_t* data = keep.data_ptr<uint8_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const auto position = static_cast<uint64_t>(keys->positions_[static_cast<size_t>(row)]);
      uint8_t* out = data + row * per_row;
      for (int64_t done = 0, block = 0; done < per_row; ++block) {
        const auto bits = philox4x32_10({static_cast<uint32_t>(position), static_cast<uint32_t>(position >> 32), static_cast<uint32_t>(block),
                                         static_cast<uint32_t>(stream)}, key);
        for (int k = 0; k < 4 && done < per_row; ++k) out[done++] = (bits[k] >> 8) >= threshold;
      }
    }
  });
  return x * keep.to(x.device()).to(x.scalar_type()) * (1.0 / (1.0 - p));
}

}  // namespace distillery
