#include "distill/add.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <memory>

#include "core/config.h"
#include "core/error.h"
#include "distill/common/adversarial_distillation.h"
#include "distill/common/distances.h"
#include "distill/common/score_distillation.h"
#include "distill/common/store_pairs.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_add_fields(ConfigSchema& s) {
  add_adversarial_fields(s, "[conv1, conv2, conv3, features]");
  s.add({"add.classifier", ConfigType::String, "the frozen feature network of the discriminator: a Fashion-MNIST classifier file",
         "assets/eval/fmnist-classifier.safetensors"});
  add_score_distillation_fields(s, "add", "2.5");
  s.add({"add.regression_weight", ConfigType::Float, "weight of the regression d(G(σ₀·z), x) onto the teacher's ODE pairs (z, x) (0: off)", "0"},
        NumberRange::at_least(0));
  s.add({"add.regression_store", ConfigType::String, "trajectory store of the teacher holding those pairs; σ₀ is its first σ", "\"\""});
  add_regression_source_field(s, "add");
  add_distance_fields(s, "add");
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
  parts.features = classifier_features(config, "add.classifier", device);

  parts.generator_term = score_distillation_term(config, "add", *parts.teacher, parts.student->sigma_data());
  if (const double weight = config.get_float("add.regression_weight"); weight > 0) {
    const auto student_sigmas = config.get_float_list("student.sigmas");
    std::shared_ptr<TrajectoryReader> pairs = open_regression_store(config, "add", teacher_spec, *parts.student,
                                                                    student_sigmas.empty() ? parts.teacher->sigma_max() : student_sigmas.front());
    auto distance = distance_from(config, "add", shape, device);
    auto* student = parts.student.get();
    parts.generator_term = [distill = std::move(parts.generator_term), pairs, student, distance, weight, device](
                               const at::Tensor& generated, const AdversarialBatch& batch, const StepContext& context, std::map<std::string, double>& stats) {
      const auto regression = one_step_regression(*pairs, *student, distance, context, device).mean();
      stats["regression_loss"] = regression.item<double>();
      const auto term = weight * regression;
      return distill ? distill(generated, batch, context, stats) + term : term;
    };
  }
  return make_adversarial_distillation(config, std::move(parts), device);
}

}  // namespace distillery
