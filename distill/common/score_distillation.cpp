#include "distill/common/score_distillation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/distances.h"
#include "distill/common/sigma_sampling.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_score_distillation_fields(ConfigSchema& s, const std::string& prefix, const std::string& default_weight) {
  s.add({prefix + ".distill_weight", ConfigType::Float, "weight λ of the teacher's score distillation (ADD: 2.5; 0: off)", default_weight},
        NumberRange::at_least(0));
  s.add({prefix + ".distill_range", ConfigType::FloatList, "σ range of the re-noising, as fractions of a 1000-point Karras grid of the teacher",
         "[0.02, 0.98]"},
        NumberRange::between(0, 1));
}

double score_distillation_weight(double sigma, double sigma_data) { return 1 / std::sqrt(1 + sigma * sigma / (sigma_data * sigma_data)); }

GeneratorTerm score_distillation_term(const Config& config, const std::string& prefix, Denoiser& teacher, double sigma_data) {
  const double weight = config.get_float(prefix + ".distill_weight");
  if (weight == 0) return {};
  const auto range = config.get_float_list(prefix + ".distill_range");
  DISTILLERY_CHECK(range.size() == 2 && range[0] < range[1], Error("a σ range must be two fractions, low < high").file(config.source())
                                                                 .field(prefix + ".distill_range").got(fmt::format("[{}]", fmt::join(range, ", "))));
  auto grid = std::make_shared<KarrasGridSampler>(teacher.sigma_min(), teacher.sigma_max());
  Denoiser* target_model = &teacher;
  return [=](const at::Tensor& generated, const AdversarialBatch& batch, const StepContext& context, std::map<std::string, double>& stats) {
    const auto positions = context.positions();
    const auto sigma = grid->draw(context.seed, noise_stream::add_distill_sigma, positions, range[0], range[1], torch::TensorOptions(torch::kFloat64))
                           .contiguous();
    const std::vector<double> sigmas(sigma.data_ptr<double>(), sigma.data_ptr<double>() + sigma.numel());
    std::vector<double> weights;
    for (const double s : sigmas) weights.push_back(score_distillation_weight(s, sigma_data));
    at::Tensor target;
    {
      torch::NoGradGuard no_grad;
      const auto noise = per_sample_normal(context.seed, noise_stream::add_distill_noise, positions, target_model->sample_shape(), generated.options());
      target = denoise_rows(*target_model, generated.detach() + per_row(sigmas, generated) * noise, sigmas, batch.labels);
    }
    const auto distillation = (squared_l2_distance(generated, target) * per_row(weights, generated).flatten()).mean();
    stats["score_distillation_loss"] = distillation.item<double>();
    return weight * distillation;
  };
}

}  // namespace distillery
