// defines: squared_l2_distance, pseudo_huber_distance, ict_pseudo_huber_c, FeatureDistance, Distance, add_distance_fields, distance_from
// Per-sample distances [N] between a student's output and its target, as consistency and
// reflow losses weigh them (Song & Dhariwal 2023, §3.3; Geng et al. 2024), all differentiable in x.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace distillery {

class Config;
class ConfigSchema;

// Mean over each sample's elements of (x − y)².
at::Tensor squared_l2_distance(const at::Tensor& x, const at::Tensor& y);
// √(‖x − y‖² + c²) − c over each sample: quadratic below c, linear above, robust to outliers.
at::Tensor pseudo_huber_distance(const at::Tensor& x, const at::Tensor& y, double c);
// iCT's c = 0.00054·√d for d-dimensional samples.
double ict_pseudo_huber_c(int64_t dimension);

// The mean squared distance between the features of a frozen network (an LPIPS-like feature
// distance): the Fashion-MNIST classifier's penultimate features of images in [−1, 1]. The
// gradient reaches x and y; the network's weights stay as they are.
class FeatureDistance {
 public:
  FeatureDistance(const std::filesystem::path& classifier_file, const c10::Device& device);
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& y) const;

 private:
  std::function<at::Tensor(const at::Tensor&)> features_;
};

using Distance = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& y)>;

// <prefix>.distance (l2 | pseudo-huber | feature), <prefix>.huber_c and <prefix>.feature_classifier.
void add_distance_fields(ConfigSchema& schema, const std::string& prefix);
// The distance those keys choose for samples of `shape`; the feature distance is refused for
// samples other than Fashion-MNIST's [1, 28, 28].
Distance distance_from(const Config& config, const std::string& prefix, const std::vector<int64_t>& shape, const c10::Device& device);

}  // namespace distillery
