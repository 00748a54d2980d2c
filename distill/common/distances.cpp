#include "distill/common/distances.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
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

DomainClassifier frozen_classifier(const std::filesystem::path& file, const c10::Device& device) {
  auto net = load_domain_classifier(file);
  net->to(device);
  net->eval();
  for (auto& p : net->parameters()) p.requires_grad_(false);
  return net;
}

// Each position's channel vector (dimension 1) at unit length. The ε sits inside the root:
// ReLU features can be all zero at a position, where an ε added outside would leave the root's
// gradient undefined.
at::Tensor unit_channels(const at::Tensor& h) { return h * (h.square().sum(1, true) + 1e-10).rsqrt(); }
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
  auto net = frozen_classifier(classifier_file, device);
  distance_ = [net](const at::Tensor& x, const at::Tensor& y) mutable { return squared_l2_distance(net->features(x), net->features(y)); };
}

FeatureDistance::FeatureDistance(const std::filesystem::path& classifier_file, const std::vector<std::string>& taps, const c10::Device& device) {
  auto net = frozen_classifier(classifier_file, device);
  std::vector<std::string> known;
  for (const auto& tap : net->feature_taps()) known.push_back(tap.name);
  DISTILLERY_CHECK(!taps.empty(), Error("the perceptual distance needs at least one feature tap").expected(fmt::format("some of: {}", fmt::join(known, ", "))));
  for (const auto& tap : taps)
    DISTILLERY_CHECK(std::find(known.begin(), known.end(), tap) != known.end(),
                     Error(fmt::format("the classifier {} has no feature tap '{}'", classifier_file.string(), tap))
                         .expected(fmt::format("one of: {}", fmt::join(known, ", "))));
  distance_ = [net, taps](const at::Tensor& x, const at::Tensor& y) mutable {
    check_shape(y, x.sizes().vec(), "the distance's target (must match the prediction)");
    const auto fx = net->features_at(x, taps), fy = net->features_at(y, taps);
    at::Tensor total;
    for (const auto& tap : taps) {
      const auto difference = (unit_channels(fx.at(tap)) - unit_channels(fy.at(tap))).square().sum(1);
      const auto per_sample = difference.dim() > 1 ? difference.flatten(1).mean(1) : difference;
      total = total.defined() ? total + per_sample : per_sample;
    }
    return total;
  };
}

void add_distance_fields(ConfigSchema& s, const std::string& prefix) {
  s.add({prefix + ".distance", ConfigType::String,
         "d(student, target): squared L2, pseudo-Huber, or in a Fashion-MNIST classifier's features: the FD features' squared distance "
         "(feature) or LPIPS's form over several taps (perceptual)",
         "l2", false, {"l2", "pseudo-huber", "feature", "perceptual"}});
  s.add({prefix + ".huber_c", ConfigType::Float, "pseudo-Huber c (0: iCT's 0.00054·√d)", "0"}, NumberRange::at_least(0));
  s.add({prefix + ".feature_classifier", ConfigType::String, "the frozen classifier of the feature and perceptual distances",
         "assets/eval/fmnist-classifier.safetensors"});
  s.add({prefix + ".feature_taps", ConfigType::StringList, "the classifier's taps the perceptual distance reads", "[conv1, conv2, conv3, features]"});
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
                   Error(fmt::format("the {} distance compares Fashion-MNIST classifier features", kind)).file(config.source()).field(prefix + ".distance")
                       .expected("samples of shape [1, 28, 28]").got(fmt::format("[{}]", fmt::join(shape, ", "))));
  const auto classifier = config.get_string(prefix + ".feature_classifier");
  if (kind == "feature") return FeatureDistance(classifier, device);
  try {
    return FeatureDistance(classifier, config.get_string_list(prefix + ".feature_taps"), device);
  } catch (Error& e) {
    if (e.field().empty()) e.file(config.source()).field(prefix + ".feature_taps");
    throw;
  }
}

}  // namespace distillery
