// defines: relative_difference
// Comparing a tensor with a reference one, for the tests that hold networks to golden outputs.
#pragma once

#include <ATen/TensorOperators.h>

namespace distillery::testing {

// max |got − expected| / max |expected|: scaled by the reference's largest magnitude, so one
// tolerance fits outputs of any size. (distributed_support.h has the overload for weight files.)
inline double relative_difference(const at::Tensor& got, const at::Tensor& expected) {
  return ((got - expected).abs().max() / expected.abs().max()).item<double>();
}

}  // namespace distillery::testing
