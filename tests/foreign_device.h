// defines: foreign_device, ForeignDeviceMixes, foreign_device_mixes, max_tensor_file_difference
// A second CPU device type for the device-follow tests: tensors on it live in host memory
// under PrivateUse1 and every operation runs through the CPU kernels, but an operation that
// mixes a foreign tensor with a (non-scalar) CPU tensor is refused, as CUDA refuses it. Running
// the pipeline on it fails wherever library code makes a tensor on the CPU instead of on its
// inputs' or the runtime's device.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace distillery::testing {

c10::Device foreign_device();  // registers the backend on first use

// Operations refused so far in this process (for the message of a failing test) and their count.
struct ForeignDeviceMixes {
  int64_t count = 0;
  std::string first;
};
ForeignDeviceMixes foreign_device_mixes();

// The largest |a − b| / max|b| over the tensors two safetensors files share by name (they
// must hold the same names). Training through the fallback rounds a little differently from
// the CPU's own path (a few operations take generic kernels), and Adam's normalised steps carry
// those differences into the weights at about 1e-5 of their size after a few steps: runs agree
// to that, not bit for bit.
double max_tensor_file_difference(const std::filesystem::path& a, const std::filesystem::path& b);

}  // namespace distillery::testing
