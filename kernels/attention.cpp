#include "kernels/attention.h"

#include <torch/types.h>

#include "core/tensor_checks.h"

namespace distillery {

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_shape(k, q.sizes().vec(), "attention keys (must match the queries)");
  check_shape(v, q.sizes().vec(), "attention values (must match the queries)");
  return at::scaled_dot_product_attention(q, k, v);
}

}  // namespace distillery
