#include "distill/common/distances.h"

#include <torch/types.h>

#include <cmath>

#include "core/error.h"
#include "core/tensor_checks.h"
#include "eval/domain_classifier.h"

namespace distillery {

namespace {
at::Tensor per_sample_squared_norm(const at::Tensor& x, const at::Tensor& y) {
  check_shape(y, x.sizes().vec(), "the distance's target (must match the prediction)");
  return (x - y).square().flatten(1).sum(1);
}
}  // namespace

at::Tensor squared_l2_distance(const at::Tensor& x, const at::Tensor& y) {
  return per_sample_squared_norm(x, y) / static_cast<double>(x[0].numel());
}

at::Tensor pseudo_huber_distance(const at::Tensor& x, const at::Tensor& y, double c) {
  DISTILLERY_CHECK(c > 0, Error("the pseudo-Huber constant must be positive").got(std::to_string(c)));
  return (per_sample_squared_norm(x, y) + c * c).sqrt() - c;
}

double ict_pseudo_huber_c(int64_t dimension) { return 0.00054 * std::sqrt(static_cast<double>(dimension)); }

FeatureDistance::FeatureDistance(const std::filesystem::path& classifier_file, const c10::Device& device) {
  auto net = load_domain_classifier(classifier_file);
  net->to(device);
  net->eval();
  for (auto& p : net->parameters()) p.requires_grad_(false);
  features_ = [net](const at::Tensor& images) mutable { return net->features(images); };
}

at::Tensor FeatureDistance::operator()(const at::Tensor& x, const at::Tensor& y) const { return squared_l2_distance(features_(x), features_(y)); }

}  // namespace distillery
