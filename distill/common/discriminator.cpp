#include "distill/common/discriminator.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <optional>
#include <utility>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/adversarial_losses.h"
#include "distill/common/sigma_sampling.h"
#include "eval/domain_classifier.h"
#include "kernels/attention.h"
#include "models/network_denoiser.h"
#include "train/trainer.h"

namespace distillery {

void freeze(torch::nn::Module& module) {
  for (auto& parameter : module.parameters()) parameter.requires_grad_(false);
}

FrozenFeatures noised_teacher_features(NetworkDenoiser& teacher, const std::vector<FeatureTap>& taps, double sigma_mean, double sigma_std) {
  freeze(teacher.module());
  std::vector<std::string> names;
  for (const auto& tap : taps) names.push_back(tap.name);
  const auto noise_level = [sigma_mean, sigma_std](const StepContext& context, bool real, int64_t rows, const at::TensorOptions& options) {
    const auto positions = context.positions();
    DISTILLERY_CHECK(static_cast<int64_t>(positions.size()) == rows,
                     Error("the discriminator's noise levels are drawn per sample position").expected(fmt::format("{} rows", positions.size()))
                         .got(fmt::format("{}", rows)));
    return lognormal_sigmas(context.seed, real ? noise_stream::ladd_real_sigma : noise_stream::ladd_fake_sigma, positions, sigma_mean, sigma_std, options);
  };
  return {teacher.shared_module(), taps,
          [&teacher, names, noise_level](const at::Tensor& images, const at::Tensor& labels, const at::Tensor&, const StepContext& context, bool real) {
            const auto sigma = noise_level(context, real, images.size(0), images.options());
            const auto noise = per_sample_normal(context.seed, real ? noise_stream::ladd_real_noise : noise_stream::ladd_fake_noise,
                                                 context.positions(), teacher.sample_shape(), images.options());
            auto shape = std::vector<int64_t>(static_cast<size_t>(images.dim()), 1);
            shape[0] = -1;
            return teacher.features(images + sigma.view(shape) * noise, sigma, labels, names);
          },
          noise_level};
}

FrozenFeatures classifier_features(const Config& config, const std::string& classifier_key, const c10::Device& device) {
  auto classifier = load_domain_classifier(config.get_string(classifier_key));
  classifier->to(device);
  freeze(*classifier);
  const auto taps = configured_taps(config, "adversarial.taps", classifier->feature_taps());
  std::vector<std::string> names;
  for (const auto& tap : taps) names.push_back(tap.name);
  return {classifier.ptr(), taps, [classifier, names](const at::Tensor& images, const at::Tensor&, const at::Tensor&, const StepContext&, bool) mutable {
            return classifier->features_at(images, names);
          },
          {}};
}

void add_discriminator_fields(ConfigSchema& s, const std::string& default_taps) {
  s.add({"adversarial.discriminator_lr", ConfigType::Float, "learning rate of the discriminator heads", "1e-4"}, NumberRange::above(0));
  s.add({"adversarial.r1_weight", ConfigType::Float, "weight of the R1 penalty mean ‖∇_x D(x)‖² on real inputs (0: off)", "0"}, NumberRange::at_least(0));
  s.add({"adversarial.taps", ConfigType::StringList, "feature taps of the frozen network that get a discriminator head", default_taps});
  s.add({"adversarial.class_conditional", ConfigType::Bool,
         "give each head a class projection ⟨embed(y), h⟩ (ADD conditions its heads; needs a class-conditional student)", "false"});
  s.add({"adversarial.noise_conditional", ConfigType::Bool,
         "give each head a noise-level projection ⟨g(σ), h⟩ of the σ its network read the images at (LADD conditions its heads on it; needs a "
         "network that reads noised images)",
         "false"});
}

Discriminator::Discriminator(const Config& config, FrozenFeatures features, int64_t num_classes, const c10::Device& device)
    : features_(std::move(features)), lr_(config.get_float("adversarial.discriminator_lr")), r1_weight_(config.get_float("adversarial.r1_weight")) {
  const bool class_conditional = config.get_bool("adversarial.class_conditional");
  DISTILLERY_CHECK(!class_conditional || num_classes > 0,
                   Error("class-conditional discriminator heads need a class-conditional student").file(config.source())
                       .field("adversarial.class_conditional").got("a student without classes").hint("set it to false"));
  const bool noise_conditional = config.get_bool("adversarial.noise_conditional");
  DISTILLERY_CHECK(!noise_conditional || features_.noise_level,
                   Error("noise-conditional discriminator heads need a network that reads noised images, and this one reads clean ones")
                       .file(config.source()).field("adversarial.noise_conditional").hint("set it to false"));
  heads_ = DiscriminatorHeads(features_.taps, class_conditional ? num_classes : 0, noise_conditional);
  heads_->to(device);
  heads_->eval();
}

at::Tensor Discriminator::logits(const at::Tensor& images, const at::Tensor& labels, const at::Tensor& condition, const StepContext& context, bool real) {
  const auto sigma = heads_->noise_conditional() ? features_.noise_level(context, real, images.size(0), images.options()) : at::Tensor();
  return heads_->forward(features_.read(images, labels, condition, context, real), labels, sigma);
}

at::Tensor Discriminator::loss(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& labels, const at::Tensor& condition,
                               const StepContext& context, std::map<std::string, double>& stats) {
  const auto real_input = real.detach().requires_grad_(r1_weight_ > 0);
  at::Tensor real_logits;
  {
    // R1 differentiates the discriminator twice, which only the math attention path can.
    std::optional<MathAttentionScope> twice_differentiable;
    if (r1_weight_ > 0) twice_differentiable.emplace();
    real_logits = logits(real_input, labels, condition, context, true);
  }
  const auto fake_logits = logits(fake.detach(), labels, condition, context, false);
  auto loss = hinge_discriminator_loss(real_logits, fake_logits);
  stats["discriminator_loss"] = loss.item<double>();
  stats["realism_real"] = (real_logits > 0).to(torch::kFloat64).mean().item<double>();
  stats["realism_fake"] = (fake_logits > 0).to(torch::kFloat64).mean().item<double>();
  if (r1_weight_ > 0) {
    const auto r1 = r1_penalty(real_logits, real_input);
    stats["r1"] = r1.item<double>();
    loss = loss + r1_weight_ * r1;
  }
  return loss;
}

at::Tensor Discriminator::generator_loss(const at::Tensor& generated, const at::Tensor& labels, const at::Tensor& condition, const StepContext& context,
                                         std::map<std::string, double>& stats) {
  const auto loss = hinge_generator_loss(logits(generated, labels, condition, context, false));
  stats["generator_adversarial_loss"] = loss.item<double>();
  return loss;
}

}  // namespace distillery
