// defines: FeatureNetwork, domain_feature_network, inception_feature_network, SourceEvaluation, evaluate_source
// A feature network applied to an image source batch by batch: running float64 statistics
// and, when a metric needs them (KID, precision/recall, accuracy), the features themselves.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <functional>
#include <string>

#include "eval/feature_statistics.h"

namespace distillery {

class ImageSource;

// Images on any device in, features and logits on the CPU out (statistics are kept on the host).
struct FeatureNetwork {
  std::string name;          // "fmnist-classifier" | "inception-v3-fid"
  std::string file, hash;    // weights file and its FNV-1a
  int64_t dims = 0;
  std::function<at::Tensor(const at::Tensor& images_uint8)> features;  // [n, dims]
  std::function<at::Tensor(const at::Tensor& images_uint8)> logits;    // empty when the network has no classes
};

// Each runs on `device`.
FeatureNetwork domain_feature_network(const std::filesystem::path& classifier_file, const c10::Device& device);
FeatureNetwork inception_feature_network(const std::filesystem::path& weights_file, const c10::Device& device);

struct SourceEvaluation {
  FeatureStatistics statistics;
  at::Tensor features, logits, labels;  // features/logits only when kept (logits only if the network has them)
};
SourceEvaluation evaluate_source(ImageSource& source, const FeatureNetwork& network, bool keep_features, int64_t batch = 250,
                                 bool show_progress = true);

}  // namespace distillery
