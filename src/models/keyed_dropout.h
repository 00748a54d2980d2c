// defines: DropoutKeys, keyed_dropout
// Dropout keyed by sample, like the noise: a training step names the global sample positions
// of its batch's rows (DropoutKeys, a scope), and each dropout layer its forward pass meets
// draws the mask of row r from (seed, stream + the layer's place in the pass, position r) by
// Philox on the host. The masks then depend neither on how the batch is split over processes
// nor on the device, and a resumed step draws them again exactly.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace distillery {

// Active on this thread until destroyed; scopes nest. `stream` owns the range
// [stream, stream + noise_stream::dropout_layers): one stream per dropout layer of the pass.
class DropoutKeys {
 public:
  DropoutKeys(uint64_t seed, uint64_t stream, std::vector<int64_t> positions);
  ~DropoutKeys();
  DropoutKeys(const DropoutKeys&) = delete;
  DropoutKeys& operator=(const DropoutKeys&) = delete;

 private:
  friend at::Tensor keyed_dropout(const at::Tensor& x, double p, bool training);
  uint64_t seed_, stream_, layers_met_ = 0;
  std::vector<int64_t> positions_;
  DropoutKeys* outer_;
};

// `x` itself outside training or at p = 0. In training, each element zeroed with probability
// p and the rest scaled by 1/(1 − p), as torch's dropout, the mask keyed by the active
// DropoutKeys; an error names the missing scope or a batch that does not match its positions.
at::Tensor keyed_dropout(const at::Tensor& x, double p, bool training);

}  // namespace distillery
