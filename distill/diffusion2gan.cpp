#include "distill/diffusion2gan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <cmath>
#include <utility>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/discriminator.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/distances.h"
#include "distill/common/paired_augmentation.h"
#include "distill/common/store_pairs.h"
#include "models/network_denoiser.h"
#include "train/trainer.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

void add_diffusion2gan_fields(ConfigSchema& s) {
  add_adversarial_fields(s, "[enc.1, bottleneck]");
  s.add({"diffusion2gan.store", ConfigType::String, "trajectory store of the teacher: its noise and final states are the (noise, image) pairs", "\"\""});
  add_distance_fields(s, "diffusion2gan");
  s.add({"diffusion2gan.regression_weight", ConfigType::Float, "weight of the regression d(G(z), x_ODE)", "1"}, NumberRange::at_least(0));
  s.add({"diffusion2gan.ensemble", ConfigType::Bool,
         "the paper's ensembled distance (E-LatentLPIPS): both images of the regression get the same random DiffAugment colour, "
         "translation and cutout each step", "false"});
  s.add({"diffusion2gan.features", ConfigType::String,
         "the discriminator's frozen network: the teacher (its features of each image, and of its noise as the ODE's start), or a Fashion-MNIST "
         "classifier (diffusion2gan.classifier; its features of each image and of its unit noise; adversarial.taps among conv1, conv2, conv3, features)",
         "teacher", false, {"teacher", "classifier"}});
  s.add({"diffusion2gan.image_sigma", ConfigType::Float, "teacher features: the σ the teacher is told its images are at", "0.1"}, NumberRange::above(0));
  s.add({"diffusion2gan.classifier", ConfigType::String,
         "classifier features: its file (FD_fmnist is measured in the shipped first one's features; the second keeps the two apart)",
         "assets/eval/fmnist-second-classifier.safetensors"});
}

FrozenFeatures paired_with_noise(FrozenFeatures of_images, NoiseFeatureReader of_noise) {
  for (auto& tap : of_images.taps) tap.shape[0] *= 2;
  // A step reads its batch three times (real, generated, the student's pass) with the same
  // noise tensor: the noise's features are computed once and kept while that tensor is given.
  struct KeptNoiseFeatures {
    at::Tensor noise, labels;
    FeatureMap features;
  };
  auto kept = std::make_shared<KeptNoiseFeatures>();
  auto read_images = std::move(of_images.read);
  of_images.read = [read_images, of_noise, kept](const at::Tensor& images, const at::Tensor& labels, const at::Tensor& noise, const StepContext& context,
                                                  bool real) {
    DISTILLERY_CHECK(noise.defined() && noise.sizes() == images.sizes(),
                     Error("Diffusion2GAN's discriminator sees each image with its noise, and was given none of the image's shape"));
    auto features = read_images(images, labels, {}, context, real);
    if (!kept->noise.is_same(noise) || !kept->labels.is_same(labels)) {
      torch::NoGradGuard constant;
      *kept = {noise, labels, of_noise(noise, labels)};
    }
    for (auto& [name, of_image] : features) of_image = torch::cat({of_image, kept->features.at(name)}, 1);
    return features;
  };
  return of_images;
}

FrozenFeatures diffusion2gan_pair_features(NetworkDenoiser& teacher, const std::vector<FeatureTap>& taps, double image_sigma, double noise_sigma) {
  freeze(teacher.module());
  std::vector<std::string> names;
  for (const auto& tap : taps) names.push_back(tap.name);
  auto of_images = [&teacher, names, image_sigma](const at::Tensor& images, const at::Tensor& labels, const at::Tensor&, const StepContext&, bool) {
    return teacher.features(images, torch::full({images.size(0)}, image_sigma, images.options()), labels, names);
  };
  auto of_noise = [&teacher, names, noise_sigma](const at::Tensor& noise, const at::Tensor& labels) {
    return teacher.features(noise * noise_sigma, torch::full({noise.size(0)}, noise_sigma, noise.options()), labels, names);
  };
  return paired_with_noise({teacher.shared_module(), taps, of_images, {}}, of_noise);
}

FrozenFeatures diffusion2gan_classifier_pair_features(const Config& config, const c10::Device& device) {
  auto of_images = classifier_features(config, "diffusion2gan.classifier", device);
  auto of_noise = [read = of_images.read](const at::Tensor& noise, const at::Tensor& labels) { return read(noise, labels, {}, StepContext{}, true); };
  return paired_with_noise(std::move(of_images), of_noise);
}

std::unique_ptr<TrainingMethod> make_diffusion2gan(const Config& config, const std::string& teacher_spec, const c10::Device& device) {
  auto [parts, network] = parts_with_network_teacher(config, teacher_spec, device, "Diffusion2GAN");
  std::shared_ptr<TrajectoryReader> pairs = open_teacher_store(config, "diffusion2gan.store", teacher_spec, *parts.student,
                                                               "Diffusion2GAN trains on the teacher's (noise, image) pairs from a trajectory store");
  const double start = pairs->sigmas().front();
  const auto student_sigmas = config.get_float_list("student.sigmas");
  const double expected = student_sigmas.empty() ? parts.teacher->sigma_max() : student_sigmas.front();
  DISTILLERY_CHECK(student_sigmas.size() <= 1 && std::abs(start - expected) < 1e-6 * expected,
                   Error("Diffusion2GAN's student takes one step from where the store's trajectories start").file(config.source()).field("student.sigmas")
                       .expected(fmt::format("[{}] (the store's first σ)", start)).got(fmt::format("{} value(s) from {}", std::max<size_t>(1, student_sigmas.size()), expected)));
  parts.features = config.get_string("diffusion2gan.features") == "classifier"
                       ? diffusion2gan_classifier_pair_features(config, device)
                       : diffusion2gan_pair_features(*network, configured_taps(config, "adversarial.taps", network->feature_taps()),
                                                     config.get_float("diffusion2gan.image_sigma"), start);
  const bool conditional = parts.student->num_classes() > 0;
  parts.batches = [pairs, start, conditional, device](const StepContext& context) {
    const auto pair = pairs_for_step(*pairs, context);
    AdversarialBatch batch;
    batch.real = pair.sample.to(device);
    batch.condition = pair.noise.to(device);
    batch.labels = conditional ? pair.labels.to(device) : at::Tensor();
    batch.student_input = batch.condition * start;
    batch.sigma.assign(static_cast<size_t>(batch.real.size(0)), start);
    return batch;
  };
  const double weight = config.get_float("diffusion2gan.regression_weight");
  if (weight > 0) {
    auto distance = distance_from(config, "diffusion2gan", parts.student->sample_shape(), device);
    const bool ensemble = config.get_bool("diffusion2gan.ensemble");
    const auto shape = parts.student->sample_shape();
    DISTILLERY_CHECK(!ensemble || shape.size() == 3, Error("the ensembled distance augments images").file(config.source()).field("diffusion2gan.ensemble")
                                                         .expected("samples of shape [C, H, W]").got(fmt::format("[{}]", fmt::join(shape, ", "))));
    // The regression's target is the real side of the batch: the pair's image.
    parts.generator_term = [distance, weight, ensemble, shape](const at::Tensor& generated, const AdversarialBatch& batch, const StepContext& context,
                                                               std::map<std::string, double>& stats) {
      const auto [compared, target] =
          ensemble ? augment_alike(generated, batch.real,
                                   draw_paired_augmentations(context.seed, noise_stream::diffusion2gan_augmentation, context.positions(), shape[1], shape[2]))
                   : std::pair{generated, batch.real};
      const auto regression = distance(compared, target).mean();
      stats["regression_loss"] = regression.item<double>();
      return weight * regression;
    };
  }
  return make_adversarial_distillation(config, std::move(parts), device);
}

}  // namespace distillery
