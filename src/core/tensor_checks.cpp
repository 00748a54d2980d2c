#include "core/tensor_checks.h"

#include <fmt/format.h>
#include <torch/types.h>

#include "core/error.h"

namespace distillery {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    out += (i ? ", " : "") + (shape[i] == kAnySize ? std::string("?") : std::to_string(shape[i]));
  return out + "]";
}

void check_shape(const at::Tensor& tensor, const std::vector<int64_t>& expected, std::string_view what) {
  DISTILLERY_CHECK(tensor.defined(), Error(fmt::format("{} is missing", what)).expected("a tensor of shape " + shape_string(expected)));
  const auto sizes = tensor.sizes().vec();
  bool ok = sizes.size() == expected.size();
  for (size_t i = 0; ok && i < sizes.size(); ++i) ok = expected[i] == kAnySize || expected[i] == sizes[i];
  DISTILLERY_CHECK(ok, Error(fmt::format("{} has the wrong shape", what)).expected(shape_string(expected)).got(shape_string(sizes)));
}

void check_dtype(const at::Tensor& tensor, c10::ScalarType expected, std::string_view what) {
  DISTILLERY_CHECK(tensor.scalar_type() == expected, Error(fmt::format("{} has the wrong dtype", what))
                                                         .expected(c10::toString(expected))
                                                         .got(c10::toString(tensor.scalar_type())));
}

void check_device(const at::Tensor& tensor, const c10::Device& expected, std::string_view what) {
  DISTILLERY_CHECK(tensor.device() == expected,
                   Error(fmt::format("{} is on the wrong device", what)).expected(expected.str()).got(tensor.device().str()));
}

}  // namespace distillery
