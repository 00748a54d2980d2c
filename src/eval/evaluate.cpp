#include "eval/evaluate.h"

#include <fmt/format.h>
#include <torch/types.h>


#include "core/error.h"
#include "core/hash.h"
#include "core/progress.h"
#include "data/fashion_mnist.h"
#include "eval/domain_classifier.h"
#include "eval/image_source.h"
#include "eval/inception.h"

namespace distillery {

FeatureNetwork domain_feature_network(const std::filesystem::path& classifier_file, const c10::Device& device) {
  DISTILLERY_CHECK(std::filesystem::exists(classifier_file), Error("the domain classifier is missing").file(classifier_file.string())
                                                                 .hint("train it: distillery classifier train --config configs/eval/fmnist_classifier.yaml"));
  auto net = load_domain_classifier(classifier_file);
  net->to(device);
  const auto check = [device](const at::Tensor& images) {
    DISTILLERY_CHECK(images.dim() == 4 && images.size(1) == 1 && images.size(2) == 28 && images.size(3) == 28,
                     Error("the Fashion-MNIST feature network needs 28×28 grey images").expected("[N, 1, 28, 28]")
                         .got(fmt::format("[{}]", fmt::join(images.sizes(), ", "))).hint("use --features inception for other images"));
    return to_model_range(images.to(device));
  };
  return {"fmnist-classifier", classifier_file.string(), file_fingerprint(classifier_file), net->feature_dims(),
          [net, check](const at::Tensor& images) mutable { return net->features(check(images)).cpu(); },
          [net, check](const at::Tensor& images) mutable { return net->logits(check(images)).cpu(); }};
}

FeatureNetwork inception_feature_network(const std::filesystem::path& weights_file, const c10::Device& device) {
  auto net = load_inception(weights_file);
  net->to(device);
  return {"inception-v3-fid", weights_file.string(), file_fingerprint(weights_file), 2048,
          [net, device](const at::Tensor& images) mutable { return inception_features(net, images.to(device)).cpu(); }, {}};
}

SourceEvaluation evaluate_source(ImageSource& source, const FeatureNetwork& network, bool keep_features, int64_t batch_size, bool show_progress) {
  DISTILLERY_CHECK(source.size() > 0, Error("no images to evaluate").got(source.describe()));
  SourceEvaluation result;
  std::vector<at::Tensor> features, logits, labels;
  Progress progress("features", source.size(), "img", show_progress ? stderr : nullptr);
  torch::NoGradGuard no_grad;
  try {
    for (ImageBatch batch; source.next(batch_size, batch);) {
      const auto f = network.features(batch.images);
      result.statistics.add(f);
      if (keep_features) {
        features.push_back(f);
        if (network.logits) logits.push_back(network.logits(batch.images));
      }
      labels.push_back(batch.labels);
      progress.advance(batch.images.size(0));
    }
  } catch (Error& e) {
    // The network's own checks (an image size) know nothing of where the images came from.
    if (e.file().empty()) e.file(source.describe());
    throw;
  }
  if (keep_features) result.features = torch::cat(features);
  if (!logits.empty()) result.logits = torch::cat(logits);
  result.labels = torch::cat(labels);
  return result;
}

}  // namespace distillery
