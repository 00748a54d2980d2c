#include "distill/add.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include "core/config.h"
#include "core/error.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/score_distillation.h"
#include "distill/common/student_network.h"
#include "eval/domain_classifier.h"
#include "models/network_denoiser.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_add_fields(ConfigSchema& s) {
  add_adversarial_fields(s, "[conv1, conv2, conv3, features]");
  s.add({"add.classifier", ConfigType::String, "the frozen feature network of the discriminator: a Fashion-MNIST classifier file",
         "assets/eval/fmnist-classifier.safetensors"});
  add_score_distillation_fields(s, "add", "2.5");
}

FrozenFeatures add_classifier_features(const Config& config, const c10::Device& device) {
  auto classifier = load_domain_classifier(config.get_string("add.classifier"));
  classifier->to(device);
  freeze(*classifier);
  const auto taps = configured_taps(config, "adversarial.taps", classifier->feature_taps());
  std::vector<std::string> names;
  for (const auto& tap : taps) names.push_back(tap.name);
  return {classifier.ptr(), taps, [classifier, names](const at::Tensor& images, const at::Tensor&, const at::Tensor&, const StepContext&, bool) mutable {
            return classifier->features_at(images, names);
          }};
}

std::unique_ptr<TrainingMethod> make_add(const Config& config, const std::string& teacher_spec, const c10::Device& device) {
  AdversarialParts parts;
  parts.teacher = load_teacher(teacher_spec, device);
  parts.student = make_student_network(config, teacher_spec, *parts.teacher);
  const auto shape = parts.student->sample_shape();
  DISTILLERY_CHECK(shape == std::vector<int64_t>({1, 28, 28}),
                   Error("ADD's discriminator reads the Fashion-MNIST classifier's features").file(config.source()).field("add.classifier")
                       .expected("samples of shape [1, 28, 28]").got(fmt::format("[{}]", fmt::join(shape, ", ")))
                       .hint("use method: ladd, whose discriminator reads the teacher's own features"));
  parts.features = add_classifier_features(config, device);

  parts.generator_term = score_distillation_term(config, "add", *parts.teacher, parts.student->sigma_data());
  return make_adversarial_distillation(config, std::move(parts), device);
}

}  // namespace distillery
