#include "distill/common/distances.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <cmath>
#include <numeric>

#include "core/config.h"
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

void add_distance_fields(ConfigSchema& s, const std::string& prefix) {
  s.add({prefix + ".distance", ConfigType::String, "d(student, target): squared L2, pseudo-Huber, or the classifier's feature distance (Fashion-MNIST)",
         "l2", false, {"l2", "pseudo-huber", "feature"}});
  s.add({prefix + ".huber_c", ConfigType::Float, "pseudo-Huber c (0: iCT's 0.00054·√d)", "0"}, NumberRange::at_least(0));
  s.add({prefix + ".feature_classifier", ConfigType::String, "the frozen classifier of the feature distance", "assets/eval/fmnist-classifier.safetensors"});
}

Distance distance_from(const Config& config, const std::string& prefix, const std::vector<int64_t>& shape, const c10::Device& device) {
  const auto kind = config.get_string(prefix + ".distance");
  if (kind == "l2") return squared_l2_distance;
  if (kind == "pseudo-huber") {
    const double set = config.get_float(prefix + ".huber_c");
    const double c = set > 0 ? set : ict_pseudo_huber_c(std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>()));
    return [c](const at::Tensor& x, const at::Tensor& y) { return pseudo_huber_distance(x, y, c); };
  }
  DISTILLERY_CHECK(shape == std::vector<int64_t>({1, 28, 28}),
                   Error("the feature distance compares Fashion-MNIST classifier features").file(config.source()).field(prefix + ".distance")
                       .expected("samples of shape [1, 28, 28]").got(fmt::format("[{}]", fmt::join(shape, ", "))));
  return FeatureDistance(config.get_string(prefix + ".feature_classifier"), device);
}

}  // namespace distillery
