// defines: GeneratorTerm, AdversarialBatch, BatchSource, AdversarialParts, parts_with_network_teacher, add_adversarial_fields,
//          make_adversarial_distillation
// The training step ADD and LADD share (Sauer et al. 2023, 2024): a student initialised from
// the teacher denoises real examples (data.*) noised to one of its σ (student.sigmas, uniform
// per row) in one step, and a discriminator (common/discriminator.h: a frozen feature network
// with a trainable head on each of several taps) tells those images from the real ones. The
// heads learn first; then the student by the hinge generator loss through the updated heads,
// plus a method's own term (ADD's score distillation). What the frozen network is,
// and what it sees, is the method's: the teacher's own features of noised images (LADD), or a
// classifier's of clean ones (ADD). A method may bring its own examples instead: Diffusion2GAN
// reads (noise, image) pairs of the teacher's ODE from a trajectory store, and its
// discriminator sees each image with the noise it came from.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "distill/common/discriminator.h"

namespace distillery {

class Config;
class ConfigSchema;
class Denoiser;
class NetworkDenoiser;
class StepContext;
class TrainingMethod;

// One step's examples on the method's device: the real images and their labels (undefined when
// unconditional), the student's inputs at their σ (one per row), and what the discriminator is
// conditioned on besides the image (undefined: nothing).
struct AdversarialBatch {
  at::Tensor real, labels, student_input, condition;
  std::vector<double> sigma;
};
using BatchSource = std::function<AdversarialBatch(const StepContext& context)>;

// A method's own generator loss of the images generated from `batch` (added to the adversarial
// one, already weighted); it may add entries to the step's stats.
using GeneratorTerm = std::function<at::Tensor(const at::Tensor& generated, const AdversarialBatch& batch, const StepContext& context,
                                               std::map<std::string, double>& stats)>;


struct AdversarialParts {
  std::unique_ptr<Denoiser> teacher;  // kept alive for the readers and terms that use it
  std::unique_ptr<NetworkDenoiser> student;
  FrozenFeatures features;
  GeneratorTerm generator_term = {};
  // Default: real examples of data.*, each noised to a σ of student.sigmas (uniform per row).
  BatchSource batches = {};
};

// The teacher of `teacher_spec` and the student (student.*, model.*) for a method whose
// discriminator reads the teacher's own features: an error names `method` when the teacher is
// not a network (an analytic mixture). Returns the parts and the teacher as a network.
std::pair<AdversarialParts, NetworkDenoiser*> parts_with_network_teacher(const Config& config, const std::string& teacher_spec,
                                                                         const c10::Device& device, const std::string& method);

// adversarial.*: the discriminator's (add_discriminator_fields), the student's learning rate
// and its adversarial weight.
void add_adversarial_fields(ConfigSchema& schema, const std::string& default_taps);

std::unique_ptr<TrainingMethod> make_adversarial_distillation(const Config& config, AdversarialParts parts, const c10::Device& device);

}  // namespace distillery
