#include "eval/in_loop_evaluation.h"

#include <torch/types.h>

#include <limits>
#include <memory>

#include "core/config.h"
#include "core/error.h"
#include "core/process_group.h"
#include "data/gaussian_mixture_spec.h"
#include "eval/evaluate.h"
#include "eval/image_source.h"
#include "eval/metrics.h"
#include "eval/sample_grid.h"
#include "io/image.h"

namespace distillery {

void add_in_loop_evaluation_fields(ConfigSchema& s) {
  s.add({"eval.reference", ConfigType::String,
         "reference statistics: a .npz (mu, sigma), an image source (dataset:fmnist-test), or gmm:FILE.yaml (the mixture's exact moments, raw features)",
         "\"\""});
  s.add({"eval.features", ConfigType::String, "features for the Fréchet distance: the domain classifier's, or the raw sample values", "fmnist", false,
         {"fmnist", "raw"}});
  s.add({"eval.classifier", ConfigType::String, "domain classifier weights (eval.features: fmnist)", "assets/eval/fmnist-classifier.safetensors"});
}

namespace {

// Features of generated samples for the in-loop Fréchet distance, and the reference's statistics.
class InLoopEvaluation {
 public:
  InLoopEvaluation(const Config& config, const std::vector<int64_t>& sample_shape, const Runtime& runtime)
      : raw_(config.get_string("eval.features") == "raw"), runtime_(runtime) {
    const auto& device = runtime.device;
    feature_dims_ = 1;
    for (const auto size : sample_shape) feature_dims_ *= size;
    const auto reference = config.get_string("eval.reference");
    DISTILLERY_CHECK(!reference.empty(), Error("in-loop evaluation needs reference statistics").file(config.source()).field("eval.reference")
                                             .expected("a .npz, dataset:fmnist-test or gmm:FILE.yaml").hint("or set eval.every=0"));
    if (raw_) {
      constexpr std::string_view kGmm = "gmm:";
      DISTILLERY_CHECK(reference.starts_with(kGmm) || reference.ends_with(".npz"),
                       Error("raw features need a mixture or a .npz as reference").field("eval.reference").got(reference));
      if (reference.starts_with(kGmm)) {
        const auto mixture = GaussianMixtureSpec::load(reference.substr(kGmm.size()));
        reference_ = FeatureStatistics::from_moments(mixture.mean(), mixture.covariance(), std::numeric_limits<int32_t>::max());
      } else {
        reference_ = FeatureStatistics::load(reference);
      }
      return;
    }
    DISTILLERY_CHECK(sample_shape.size() == 3, Error("domain features need image samples").field("eval.features").hint("use eval.features: raw"));
    network_ = domain_feature_network(config.get_string("eval.classifier"), device);
    feature_dims_ = network_.dims;
    if (reference.ends_with(".npz")) {
      reference_ = FeatureStatistics::load(reference, network_.dims, network_.hash);
    } else {
      const auto source = open_image_source(reference, {}, device);
      reference_ = evaluate_source(*source, network_, false, 250, false).statistics;
    }
  }

  // FD of `num` samples (indices 0..num−1 of `request` with its seed), and their class
  // accuracy when the samples are labelled images.
  std::map<std::string, double> operator()(Denoiser& student, const SampleRequest& request) {
    BatchSampler sampler(student, request);
    const auto& processes = runtime_.processes();
    // This process's share: a contiguous range of indices, so the gathered rows are in order.
    const int64_t world_size = processes.world_size(), rank = processes.rank();
    const int64_t share_end = request.num * (rank + 1) / world_size;
    std::vector<at::Tensor> features;
    auto counts = torch::zeros({2}, torch::kFloat64);  // correct, labelled
    for (int64_t first = request.num * rank / world_size; first < share_end; first += request.batch) {
      std::vector<int64_t> indices;
      for (int64_t i = first; i < std::min(share_end, first + request.batch); ++i) indices.push_back(i);
      const auto drawn = sampler.run(indices);
      if (raw_) {
        features.push_back(drawn.samples.reshape({drawn.samples.size(0), -1}).to(torch::kCPU, torch::kFloat64));
        continue;
      }
      const auto images = quantize_to_uint8(drawn.samples);
      features.push_back(network_.features(images));
      if (drawn.labels.defined() && network_.logits) {
        const auto rows = static_cast<double>(indices.size());
        counts[0] += classification_accuracy(network_.logits(images), drawn.labels.cpu()) * rows;
        counts[1] += rows;
      }
    }
    auto all = features.empty() ? torch::empty({0, feature_dims_}, torch::kFloat64) : torch::cat(features);
    if (world_size > 1) {
      // Exchanged on the device the group's backend serves (NCCL takes GPU tensors only).
      const auto device = student.device();
      all = processes.gather_rows(all.to(device), "the evaluation's features").cpu();
      auto summed = counts.to(device);
      processes.sum({summed}, "the evaluation's class counts");
      counts = summed.cpu();
    }
    // Added in the batches one process adds them in: the same statistics whatever the count.
    FeatureStatistics statistics;
    for (int64_t first = 0; first < request.num; first += request.batch) statistics.add(all.narrow(0, first, std::min(request.batch, request.num - first)));
    std::map<std::string, double> result = {{raw_ ? "fd_raw" : "fd_fmnist", frechet_distance(statistics, reference_)}};
    if (counts[1].item<double>() > 0) result["class_accuracy"] = counts[0].item<double>() / counts[1].item<double>();
    return result;
  }

 private:
  bool raw_;
  Runtime runtime_;
  int64_t feature_dims_;
  FeatureNetwork network_;
  FeatureStatistics reference_;
};

}  // namespace

EvaluationCallback make_in_loop_evaluation(const Config& config, const std::vector<int64_t>& sample_shape, const Runtime& runtime) {
  auto evaluation = std::make_shared<InLoopEvaluation>(config, sample_shape, runtime);
  return [evaluation](Denoiser& network, const SampleRequest& request) { return (*evaluation)(network, request); };
}

TrainerCallbacks make_trainer_callbacks(const Config& config, const std::vector<int64_t>& sample_shape, const Runtime& runtime) {
  TrainerCallbacks callbacks;
  callbacks.grid = make_sample_grid_writer(sample_shape);
  if (config.get_int("eval.every") > 0) callbacks.evaluate = make_in_loop_evaluation(config, sample_shape, runtime);
  return callbacks;
}

}  // namespace distillery
