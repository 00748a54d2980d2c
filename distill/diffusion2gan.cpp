#include "distill/diffusion2gan.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/distances.h"
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
  s.add({"diffusion2gan.image_sigma", ConfigType::Float, "the σ the discriminator's teacher is told its images are at", "0.1"}, NumberRange::above(0));
}

FrozenFeatures diffusion2gan_pair_features(NetworkDenoiser& teacher, const std::vector<FeatureTap>& taps, double image_sigma, double noise_sigma) {
  freeze(teacher.module());
  std::vector<std::string> names;
  std::vector<FeatureTap> paired;
  for (auto tap : taps) {
    names.push_back(tap.name);
    tap.shape[0] *= 2;
    paired.push_back(tap);
  }
  // A step reads its batch three times (real, generated, the student's pass) with the same
  // noise tensor: the noise's features are computed once and kept while that tensor is given.
  struct NoiseFeatures {
    at::Tensor noise, labels;
    FeatureMap features;
  };
  auto kept = std::make_shared<NoiseFeatures>();
  return {teacher.shared_module(), paired,
          [&teacher, names, image_sigma, noise_sigma, kept](const at::Tensor& images, const at::Tensor& labels, const at::Tensor& noise, const StepContext&,
                                                            bool) {
            DISTILLERY_CHECK(noise.defined() && noise.sizes() == images.sizes(),
                             Error("Diffusion2GAN's discriminator sees each image with its noise, and was given none of the image's shape"));
            const auto rows = images.size(0);
            auto of_images = teacher.features(images, torch::full({rows}, image_sigma, images.options()), labels, names);
            if (!kept->noise.is_same(noise) || !kept->labels.is_same(labels)) {
              torch::NoGradGuard constant;
              *kept = {noise, labels, teacher.features(noise * noise_sigma, torch::full({rows}, noise_sigma, images.options()), labels, names)};
            }
            FeatureMap paired;
            for (const auto& name : names) paired[name] = torch::cat({of_images.at(name), kept->features.at(name)}, 1);
            return paired;
          }};
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
  parts.features = diffusion2gan_pair_features(*network, configured_taps(config, "adversarial.taps", network->feature_taps()),
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
    // The regression's target is the real side of the batch: the pair's image.
    parts.generator_term = [distance, weight](const at::Tensor& generated, const AdversarialBatch& batch, const StepContext&,
                                              std::map<std::string, double>& stats) {
      const auto regression = distance(generated, batch.real).mean();
      stats["regression_loss"] = regression.item<double>();
      return weight * regression;
    };
  }
  return make_adversarial_distillation(config, std::move(parts), device);
}

}  // namespace distillery
