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

// Distances in the features of a frozen Fashion-MNIST classifier, of images in [−1, 1]. The
// gradient reaches x and y; the network's weights stay as they are.
class FeatureDistance {
 public:
  // The mean squared difference of the penultimate features (the FD features).
  FeatureDistance(const std::filesystem::path& classifier_file, const c10::Device& device);
  // LPIPS's form (Zhang et al. 2018) with equal weights: at each tap, every position's channel
  // vector scaled to unit length, their squared difference summed over channels and averaged
  // over positions, then summed over the taps. Early taps hold where things are, late ones what
  // they are; the scaling keeps a tap of large activations from drowning the others. An
  // unknown tap is refused here, naming the classifier's taps.
  FeatureDistance(const std::filesystem::path& classifier_file, const std::vector<std::string>& taps, const c10::Device& device);
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& y) const { return distance_(x, y); }

 private:
  std::function<at::Tensor(const at::Tensor&, const at::Tensor&)> distance_;
};

using Distance = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& y)>;

// <prefix>.distance (l2 | pseudo-huber | feature | perceptual), <prefix>.huber_c,
// <prefix>.feature_classifier and <prefix>.feature_taps (the perceptual distance's).
void add_distance_fields(ConfigSchema& schema, const std::string& prefix);
// The distance those keys choose for samples of `shape`; the feature distance is refused for
// samples other than Fashion-MNIST's [1, 28, 28], and so is the perceptual one.
Distance distance_from(const Config& config, const std::string& prefix, const std::vector<int64_t>& shape, const c10::Device& device);

}  // namespace distillery
