// defines: Bfloat16Autocast
// A scope in which forward passes on a device type autocast to bfloat16 (PyTorch's autocast:
// matrix products and convolutions in bfloat16, precision-sensitive operations in float32).
// Training steps under train.precision: bf16 and sampling under --precision bf16 use it; the state
// before the scope comes back at its end. Autocast is per thread.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace distillery {

class Bfloat16Autocast {
 public:
  explicit Bfloat16Autocast(c10::DeviceType device);
  ~Bfloat16Autocast();
  Bfloat16Autocast(const Bfloat16Autocast&) = delete;
  Bfloat16Autocast& operator=(const Bfloat16Autocast&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
  c10::ScalarType was_dtype_;
};

}  // namespace distillery
