// defines: FrozenFeatures, freeze, noised_teacher_features, classifier_features, add_discriminator_fields, Discriminator
// The discriminator of adversarial distillation (ADD, LADD, Diffusion2GAN) and of CTM's GAN
// term: a frozen feature network read at several taps, with a trainable head on each
// (DiscriminatorHeads, class-conditional by adversarial.class_conditional). The heads learn by
// the hinge loss plus the R1 penalty on real inputs (adversarial.r1_weight), and are conditioned
// on the noise level the network read the images at when it reads noised ones and
// adversarial.noise_conditional asks; a generator learns
// by the hinge generator loss through them. Only the heads are trained: the feature network has
// no gradient and no optimiser state, and a generator's gradient passes through it to its images.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "distill/common/discriminator_heads.h"
#include "models/feature_taps.h"

namespace torch::nn { class Module; }

namespace distillery {

class Config;
class ConfigSchema;
class NetworkDenoiser;
class StepContext;

// The discriminator's frozen network: the taps that get heads (with the shapes the reader
// gives), and their features of a batch of images. `condition` is what the discriminator is
// conditioned on besides the image and label (undefined: nothing); `real` says which side the
// batch is, for a reader that draws noise per side.
struct FrozenFeatures {
  std::shared_ptr<torch::nn::Module> network;  // frozen (freeze()), shared with the reader
  std::vector<FeatureTap> taps;
  std::function<FeatureMap(const at::Tensor& images, const at::Tensor& labels, const at::Tensor& condition, const StepContext& context, bool real)>
      read;
  // The σ ([N], in `options`) that `read` noises each row of a side to in this step; empty for
  // a reader of clean images.
  std::function<at::Tensor(const StepContext& context, bool real, int64_t rows, const at::TensorOptions& options)> noise_level;
};

// Turns off gradients of every parameter of `module`: backward passes through it, into nothing of its own.
void freeze(torch::nn::Module& module);

// The teacher (frozen here) read at `taps` of each side's images noised to
// σ = exp(sigma_mean + sigma_std·n), one independent draw per side and row (streams
// ladd_{real,fake}_{sigma,noise}): LADD's discriminator, and CTM's.
FrozenFeatures noised_teacher_features(NetworkDenoiser& teacher, const std::vector<FeatureTap>& taps, double sigma_mean, double sigma_std);

// The frozen Fashion-MNIST classifier of the file the config's `classifier_key` names, read at
// adversarial.taps (its conv1, conv2, conv3, features) of clean images: ADD's discriminator.
// FD_fmnist is measured in the shipped classifier's features, so a student trained against it
// is judged by its own discriminator's network: give another classifier file to avoid that.
FrozenFeatures classifier_features(const Config& config, const std::string& classifier_key, const c10::Device& device);

// adversarial.discriminator_lr, .r1_weight, .taps (default `default_taps`, the method's
// network's), .class_conditional and .noise_conditional.
void add_discriminator_fields(ConfigSchema& schema, const std::string& default_taps);

class Discriminator {
 public:
  // Heads on `features.taps`, initialised from torch's generator (seed it first for a
  // reproducible start), class-conditional when the config asks (then `num_classes` > 0, or an
  // error names the key), noise-conditional when it asks (then `features` reads noised images,
  // or an error names the key).
  Discriminator(const Config& config, FrozenFeatures features, int64_t num_classes, const c10::Device& device);

  // The heads' loss: hinge on `real` against `fake` (detached here), plus the R1 penalty on
  // `real`; stats gain discriminator_loss, realism_real, realism_fake (the share of rows the
  // heads call real, averaged over heads) and r1.
  at::Tensor loss(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& labels, const at::Tensor& condition, const StepContext& context,
                  std::map<std::string, double>& stats);
  // The generator's hinge loss −mean(logit) of `generated` through the heads, unweighted;
  // stats gain generator_adversarial_loss.
  at::Tensor generator_loss(const at::Tensor& generated, const at::Tensor& labels, const at::Tensor& condition, const StepContext& context,
                            std::map<std::string, double>& stats);

  torch::nn::Module& heads() { return *heads_; }
  double lr() const { return lr_; }

 private:
  at::Tensor logits(const at::Tensor& images, const at::Tensor& labels, const at::Tensor& condition, const StepContext& context, bool real);

  FrozenFeatures features_;
  DiscriminatorHeads heads_{nullptr};
  double lr_, r1_weight_;
};

}  // namespace distillery
