#include "distill/add.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/distances.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/student_network.h"
#include "eval/domain_classifier.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_add_fields(ConfigSchema& s) {
  add_adversarial_fields(s, "[conv1, conv2, conv3, features]");
  s.add({"add.classifier", ConfigType::String, "the frozen feature network of the discriminator: a Fashion-MNIST classifier file",
         "assets/eval/fmnist-classifier.safetensors"});
  s.add({"add.distill_weight", ConfigType::Float, "weight λ of the teacher's score distillation (ADD: 2.5; 0: adversarial loss alone)", "2.5"},
        NumberRange::at_least(0));
  s.add({"add.distill_range", ConfigType::FloatList, "σ range of the re-noising, as fractions of a 1000-point Karras grid of the teacher", "[0.02, 0.98]"},
        NumberRange::between(0, 1));
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

double add_score_distillation_weight(double sigma, double sigma_data) { return 1 / std::sqrt(1 + sigma * sigma / (sigma_data * sigma_data)); }

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

  const double weight = config.get_float("add.distill_weight");
  if (weight > 0) {
    const auto range = config.get_float_list("add.distill_range");
    DISTILLERY_CHECK(range.size() == 2 && range[0] < range[1], Error("a σ range must be two fractions, low < high").file(config.source())
                                                                   .field("add.distill_range").got(fmt::format("[{}]", fmt::join(range, ", "))));
    auto grid = std::make_shared<KarrasGridSampler>(parts.teacher->sigma_min(), parts.teacher->sigma_max());
    Denoiser* teacher = parts.teacher.get();
    const double sigma_data = parts.student->sigma_data();
    parts.generator_term = [=](const at::Tensor& generated, const AdversarialBatch& batch, const StepContext& context, std::map<std::string, double>& stats) {
      const auto positions = context.positions();
      const auto sigma = grid->draw(context.seed, noise_stream::add_distill_sigma, positions, range[0], range[1],
                                    torch::TensorOptions(torch::kFloat64)).contiguous();
      const std::vector<double> sigmas(sigma.data_ptr<double>(), sigma.data_ptr<double>() + sigma.numel());
      std::vector<double> weights;
      for (const double s : sigmas) weights.push_back(add_score_distillation_weight(s, sigma_data));
      at::Tensor target;
      {
        torch::NoGradGuard no_grad;
        const auto noise = per_sample_normal(context.seed, noise_stream::add_distill_noise, positions, teacher->sample_shape(), generated.options());
        target = denoise_rows(*teacher, generated.detach() + per_row(sigmas, generated) * noise, sigmas, batch.labels);
      }
      const auto distillation = (squared_l2_distance(generated, target) * per_row(weights, generated).flatten()).mean();
      stats["score_distillation_loss"] = distillation.item<double>();
      return weight * distillation;
    };
  }
  return make_adversarial_distillation(config, std::move(parts), device);
}

}  // namespace distillery
