#include "distill/common/adversarial_distillation.h"

#include <torch/types.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/adversarial_losses.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/student_network.h"
#include "kernels/attention.h"
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

void freeze(torch::nn::Module& module) {
  for (auto& parameter : module.parameters()) parameter.requires_grad_(false);
}

void add_adversarial_fields(ConfigSchema& s, const std::string& default_taps) {
  s.add({"adversarial.generator_lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "1e-5"}, NumberRange::above(0));
  s.add({"adversarial.discriminator_lr", ConfigType::Float, "learning rate of the discriminator heads", "1e-4"}, NumberRange::above(0));
  s.add({"adversarial.generator_weight", ConfigType::Float, "weight of the student's hinge loss −mean(logit) through the heads", "1"}, NumberRange::at_least(0));
  s.add({"adversarial.r1_weight", ConfigType::Float, "weight of the R1 penalty mean ‖∇_x D(x)‖² on real inputs (0: off)", "0"}, NumberRange::at_least(0));
  s.add({"adversarial.taps", ConfigType::StringList, "feature taps of the frozen network that get a discriminator head", default_taps});
  s.add({"adversarial.class_conditional", ConfigType::Bool,
         "give each head a class projection ⟨embed(y), h⟩ (ADD conditions its heads; needs a class-conditional student)", "false"});
}

namespace {

class AdversarialDistillation final : public TrainingMethod {
 public:
  AdversarialDistillation(const Config& config, AdversarialParts parts, const c10::Device& device)
      : parts_(std::move(parts)),
        generator_lr_(config.get_float("adversarial.generator_lr")),
        discriminator_lr_(config.get_float("adversarial.discriminator_lr")),
        generator_weight_(config.get_float("adversarial.generator_weight")),
        r1_weight_(config.get_float("adversarial.r1_weight")),
        student_sigmas_(config.get_float_list("student.sigmas")) {
    if (student_sigmas_.empty()) student_sigmas_ = {parts_.teacher->sigma_max()};
    request_.sampler = "multistep";
    request_.sigmas = student_sigmas_;
    request_.steps = static_cast<int>(student_sigmas_.size());
    torch::manual_seed(static_cast<uint64_t>(config.get_int("train.seed")));
    const bool class_conditional = config.get_bool("adversarial.class_conditional");
    DISTILLERY_CHECK(!class_conditional || parts_.student->num_classes() > 0,
                     Error("class-conditional discriminator heads need a class-conditional student").file(config.source())
                         .field("adversarial.class_conditional").got("a student without classes").hint("set it to false"));
    heads_ = DiscriminatorHeads(parts_.features.taps, class_conditional ? parts_.student->num_classes() : 0);
    heads_->to(device);
    heads_->eval();
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
    return {{"generator", &parts_.student->module(), parts_.student->file_metadata()}, {"discriminator_heads", heads_.get()}};
  }
  std::vector<OptimizerSlot> optimizers() override {
    return {{"generator", &parts_.student->module(), generator_lr_}, {"discriminator", heads_.get(), discriminator_lr_}};
  }
  void start_from(const NetworkDenoiser& initial) override { parts_.student->copy_weights_from(initial); }

  std::map<std::string, double> step(StepContext& context) override {
    std::map<std::string, double> stats;
    const auto batch = parts_.batches(context);
    const auto& labels = batch.labels;
    const auto generated = denoise_rows(*parts_.student, batch.student_input, batch.sigma, labels);

    const auto real_input = batch.real.detach().requires_grad_(r1_weight_ > 0);
    at::Tensor real_logits, fake_logits;
    {
      // R1 differentiates the discriminator twice, which only the math attention path can.
      std::optional<MathAttentionScope> twice_differentiable;
      if (r1_weight_ > 0) twice_differentiable.emplace();
      real_logits = discriminate(real_input, batch, context, true);
    }
    fake_logits = discriminate(generated.detach(), batch, context, false);
    auto loss = hinge_discriminator_loss(real_logits, fake_logits);
    stats["discriminator_loss"] = loss.item<double>();
    // The share of rows each side's heads call real, on average over the heads.
    stats["realism_real"] = (real_logits > 0).to(torch::kFloat64).mean().item<double>();
    stats["realism_fake"] = (fake_logits > 0).to(torch::kFloat64).mean().item<double>();
    if (r1_weight_ > 0) {
      const auto r1 = r1_penalty(real_logits, real_input);
      stats["r1"] = r1.item<double>();
      loss = loss + r1_weight_ * r1;
    }
    context.update("discriminator", loss);

    auto generator_loss = hinge_generator_loss(discriminate(generated, batch, context, false));
    stats["generator_adversarial_loss"] = generator_loss.item<double>();
    generator_loss = generator_weight_ * generator_loss;
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

  at::Tensor discriminate(const at::Tensor& images, const AdversarialBatch& batch, const StepContext& context, bool real) {
    return heads_->forward(parts_.features.read(images, batch.labels, batch.condition, context, real), batch.labels);
  }

  AdversarialParts parts_;
  double generator_lr_, discriminator_lr_, generator_weight_, r1_weight_;
  std::vector<double> student_sigmas_;
  DiscriminatorHeads heads_{nullptr};
  std::optional<RealDataStream> real_data_;
  SampleRequest request_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_adversarial_distillation(const Config& config, AdversarialParts parts, const c10::Device& device) {
  return std::make_unique<AdversarialDistillation>(config, std::move(parts), device);
}

}  // namespace distillery
