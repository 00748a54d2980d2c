#include "distill/common/adversarial_distillation.h"

#include <torch/types.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

std::pair<AdversarialParts, NetworkDenoiser*> parts_with_network_teacher(const Config& config, const std::string& teacher_spec,
                                                                         const c10::Device& device, const std::string& method) {
  AdversarialParts parts;
  parts.teacher = load_teacher(teacher_spec, device);
  auto* network = dynamic_cast<NetworkDenoiser*>(parts.teacher.get());
  DISTILLERY_CHECK(network, Error(method + "'s discriminator reads the teacher's own features, and this teacher has no network to read").field("method")
                                .got(parts.teacher->describe())
                                .hint("give a network teacher (a distillery denoiser file or run), or use method: add with a feature classifier"));
  parts.student = make_student_network(config, teacher_spec, *parts.teacher);
  return {std::move(parts), network};
}

void add_adversarial_fields(ConfigSchema& s, const std::string& default_taps) {
  add_discriminator_fields(s, default_taps);
  s.add({"adversarial.generator_lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "1e-5"}, NumberRange::above(0));
  s.add({"adversarial.generator_weight", ConfigType::Float, "weight of the student's hinge loss −mean(logit) through the heads", "1"}, NumberRange::at_least(0));
}

namespace {

class AdversarialDistillation final : public TrainingMethod {
 public:
  AdversarialDistillation(const Config& config, AdversarialParts parts, const c10::Device& device)
      : parts_(std::move(parts)),
        generator_lr_(config.get_float("adversarial.generator_lr")),
        generator_weight_(config.get_float("adversarial.generator_weight")),
        student_sigmas_(config.get_float_list("student.sigmas")) {
    if (student_sigmas_.empty()) student_sigmas_ = {parts_.teacher->sigma_max()};
    request_.sampler = "multistep";
    request_.sigmas = student_sigmas_;
    request_.steps = static_cast<int>(student_sigmas_.size());
    torch::manual_seed(static_cast<uint64_t>(config.get_int("train.seed")));
    discriminator_.emplace(config, std::move(parts_.features), parts_.student->num_classes(), device);
    if (!parts_.batches) {
      const auto classes = student_classes(config, parts_.student->num_classes());
      request_.labels = label_policy_of(classes, parts_.student->num_classes());
      real_data_.emplace(config, parts_.student->sample_shape(), parts_.student->num_classes(), noise_stream::adversarial_real_flip, device, classes);
      parts_.batches = [this](const StepContext& context) { return noised_real_examples(context); };
    }
  }

  NetworkDenoiser* generator() override { return parts_.student.get(); }
  SampleRequest sampling() const override { return request_; }
  std::vector<CheckpointModule> checkpoint_modules() override {
    return {{"generator", &parts_.student->module(), parts_.student->file_metadata()}, {"discriminator_heads", &discriminator_->heads()}};
  }
  std::vector<OptimizerSlot> optimizers() override {
    return {{"generator", &parts_.student->module(), generator_lr_}, {"discriminator", &discriminator_->heads(), discriminator_->lr()}};
  }
  void start_from(const NetworkDenoiser& initial) override { parts_.student->copy_weights_from(initial); }

  std::map<std::string, double> step(StepContext& context) override {
    std::map<std::string, double> stats;
    const auto batch = parts_.batches(context);
    const auto& labels = batch.labels;
    const auto generated = denoise_rows(*parts_.student, batch.student_input, batch.sigma, labels);

    context.update("discriminator", discriminator_->loss(batch.real, generated, labels, batch.condition, context, stats));
    auto generator_loss = generator_weight_ * discriminator_->generator_loss(generated, labels, batch.condition, context, stats);
    if (parts_.generator_term) generator_loss = generator_loss + parts_.generator_term(generated, batch, context, stats);
    context.update("generator", generator_loss);
    return stats;
  }

 private:
  // Real examples of data.*, each with its copy noised to a σ of the student's grid as the
  // student's input.
  AdversarialBatch noised_real_examples(const StepContext& context) {
    const auto positions = context.positions();
    AdversarialBatch batch;
    std::tie(batch.real, batch.labels) = real_data_->batch(context.seed, positions);
    const auto u = uniform_per_sample(context.seed, noise_stream::adversarial_student_step, positions).contiguous();
    batch.sigma.resize(positions.size());
    for (size_t r = 0; r < batch.sigma.size(); ++r)
      batch.sigma[r] = student_sigmas_[std::min(student_sigmas_.size() - 1, static_cast<size_t>(u.data_ptr<double>()[r] * static_cast<double>(student_sigmas_.size())))];
    const auto noise = per_sample_normal(context.seed, noise_stream::adversarial_student_noise, positions, parts_.student->sample_shape(), batch.real.options());
    batch.student_input = batch.real + per_row(batch.sigma, batch.real) * noise;
    return batch;
  }

  AdversarialParts parts_;
  double generator_lr_, generator_weight_;
  std::vector<double> student_sigmas_;
  std::optional<Discriminator> discriminator_;
  std::optional<RealDataStream> real_data_;
  SampleRequest request_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_adversarial_distillation(const Config& config, AdversarialParts parts, const c10::Device& device) {
  return std::make_unique<AdversarialDistillation>(config, std::move(parts), device);
}

}  // namespace distillery
