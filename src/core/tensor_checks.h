// defines: check_shape, check_dtype, check_device, shape_string
// TORCH_CHECK-style checks for user-supplied tensors, raising distillery::Error that names
// the tensor, the expectation and what was found.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace at { class Tensor; }
namespace c10 {
enum class ScalarType : int8_t;
struct Device;
}  // namespace c10

namespace distillery {

inline constexpr int64_t kAnySize = -1;

// `expected` may contain kAnySize for dimensions that can take any size.
void check_shape(const at::Tensor& tensor, const std::vector<int64_t>& expected, std::string_view what);
void check_dtype(const at::Tensor& tensor, c10::ScalarType expected, std::string_view what);
void check_device(const at::Tensor& tensor, const c10::Device& expected, std::string_view what);

std::string shape_string(const std::vector<int64_t>& shape);  // "[2, 3]", "?" for kAnySize

}  // namespace distillery
