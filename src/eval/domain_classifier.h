// defines: DomainClassifierImpl, DomainClassifier, load_domain_classifier,
//          train_domain_classifier, classifier_training_schema
// The Fashion-MNIST classifier whose penultimate features define FD_fmnist (a Fréchet distance
// in features of a network trained on the domain, since Inception weights cannot be fetched
// everywhere) and whose predictions measure class-conditional accuracy. Inputs are images in
// the model range [−1, 1], [N, 1, 28, 28].
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "models/feature_taps.h"
#include "train/run_options.h"

namespace distillery {

class ConfigSchema;

class DomainClassifierImpl : public torch::nn::Module {
 public:
  DomainClassifierImpl(int64_t channels, int64_t features, int64_t classes, double dropout);
  at::Tensor features(const at::Tensor& x);  // [N, feature_dims] after ReLU
  at::Tensor logits(const at::Tensor& x);
  // The places a discriminator can read (ADD's heads on a frozen network), in network order:
  // "conv1" [C, 14, 14] and "conv2" [2C, 7, 7] after ReLU and pooling, "conv3" [4C, 7, 7] after
  // ReLU, "features" [feature_dims]: the FD features.
  std::vector<FeatureTap> feature_taps() const;
  // The features at the named taps from one pass that stops at the deepest (an error lists
  // the taps for an unknown name).
  FeatureMap features_at(const at::Tensor& x, const std::vector<std::string>& taps);
  int64_t feature_dims() const { return feature_dims_; }
  int64_t classes() const { return classes_; }
  std::string config_json() const;

 private:
  // The pass up to the features, handing each tap to `visit` (when given) until it says stop.
  at::Tensor forward_features(const at::Tensor& x, const FeatureVisitor& visit = {});
  int64_t channels_, feature_dims_, classes_;
  double dropout_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::Linear fc_{nullptr}, out_{nullptr};
};
TORCH_MODULE(DomainClassifier);

// A file written by train_domain_classifier (format "distillery.classifier" v1), in eval mode.
DomainClassifier load_domain_classifier(const std::filesystem::path& path);

const ConfigSchema& classifier_training_schema();

// Writes out_dir/{config.json, stats.jsonl, checkpoints/, classifier.safetensors}; returns the
// test-set accuracy of the final weights (also stored in the file's metadata).
double train_domain_classifier(const TrainingRunOptions& options);

}  // namespace distillery
