// defines: FrozenFeatures, GeneratorTerm, AdversarialParts, freeze, add_adversarial_fields, make_adversarial_distillation
// The training step ADD and LADD share (Sauer et al. 2023, 2024): a student initialised from
// the teacher denoises real examples (data.*) noised to one of its σ (student.sigmas, uniform
// per row) in one step, and a discriminator tells those images from the real ones: a frozen
// feature network read at several taps (adversarial.taps) with a trainable head on each
// (DiscriminatorHeads). The heads learn by the hinge loss plus the R1 penalty on real inputs
// (adversarial.r1_weight); then the student by the hinge generator loss through the updated
// heads, plus a method's own term (ADD's score distillation). Only the student and the heads
// are optimised: the feature network is frozen (no gradient, no optimiser state), and the
// student's gradient passes through it to the generated images. What the frozen network is,
// and what it sees, is the method's: the teacher's own features of noised images (LADD), or a
// classifier's of clean ones (ADD).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/feature_taps.h"

namespace torch::nn { class Module; }

namespace distillery {

class Config;
class ConfigSchema;
class Denoiser;
class NetworkDenoiser;
class StepContext;
class TrainingMethod;

// The discriminator's frozen network: the taps that get heads, and their features of a batch
// of images. `real` says which side the batch is, for a reader that draws noise per side.
struct FrozenFeatures {
  std::shared_ptr<torch::nn::Module> network;  // frozen (freeze()), shared with the reader
  std::vector<FeatureTap> taps;
  std::function<FeatureMap(const at::Tensor& images, const at::Tensor& labels, const StepContext& context, bool real)> read;
};

// A method's own generator loss of the generated images (added to the adversarial one, already
// weighted); it may add entries to the step's stats.
using GeneratorTerm = std::function<at::Tensor(const at::Tensor& generated, const at::Tensor& labels, const StepContext& context,
                                               std::map<std::string, double>& stats)>;

struct AdversarialParts {
  std::unique_ptr<Denoiser> teacher;  // kept alive for the readers and terms that use it
  std::unique_ptr<NetworkDenoiser> student;
  FrozenFeatures features;
  GeneratorTerm generator_term = {};
};

// Turns off gradients of every parameter of `module`: backward passes through it, into nothing of its own.
void freeze(torch::nn::Module& module);

// adversarial.*: learning rates, the generator's adversarial weight, R1 weight, the taps
// (default `default_taps`, the method's network's).
void add_adversarial_fields(ConfigSchema& schema, const std::string& default_taps);

std::unique_ptr<TrainingMethod> make_adversarial_distillation(const Config& config, AdversarialParts parts, const c10::Device& device);

}  // namespace distillery
