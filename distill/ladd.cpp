#include "distill/ladd.h"

#include <torch/types.h>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/score_distillation.h"
#include "distill/common/sigma_sampling.h"
#include "models/network_denoiser.h"
#include "train/trainer.h"

namespace distillery {

void add_ladd_fields(ConfigSchema& s) {
  add_adversarial_fields(s, "[enc.1, bottleneck, dec.1]");
  s.add({"ladd.sigma_mean", ConfigType::Float, "m of the discriminator's noise level, σ = exp(m + s·n) (LADD's logit-normal m in rectified-flow time)", "1"});
  s.add({"ladd.sigma_std", ConfigType::Float, "s of the same", "1"}, NumberRange::above(0));
  add_score_distillation_fields(s, "ladd", "0");
}

FrozenFeatures ladd_teacher_features(NetworkDenoiser& teacher, const std::vector<FeatureTap>& taps, double sigma_mean, double sigma_std) {
  freeze(teacher.module());
  std::vector<std::string> names;
  for (const auto& tap : taps) names.push_back(tap.name);
  return {teacher.shared_module(), taps, [&teacher, names, sigma_mean, sigma_std](const at::Tensor& images, const at::Tensor& labels, const at::Tensor&, const StepContext& context, bool real) {
            const auto positions = context.positions();
            const auto sigma = lognormal_sigmas(context.seed, real ? noise_stream::ladd_real_sigma : noise_stream::ladd_fake_sigma, positions,
                                                sigma_mean, sigma_std, images.options());
            const auto noise = per_sample_normal(context.seed, real ? noise_stream::ladd_real_noise : noise_stream::ladd_fake_noise, positions,
                                                 teacher.sample_shape(), images.options());
            auto shape = std::vector<int64_t>(static_cast<size_t>(images.dim()), 1);
            shape[0] = -1;
            return teacher.features(images + sigma.view(shape) * noise, sigma, labels, names);
          }};
}

std::unique_ptr<TrainingMethod> make_ladd(const Config& config, const std::string& teacher_spec, const c10::Device& device) {
  auto [parts, network] = parts_with_network_teacher(config, teacher_spec, device, "LADD");
  parts.features = ladd_teacher_features(*network, configured_taps(config, "adversarial.taps", network->feature_taps()),
                                         config.get_float("ladd.sigma_mean"), config.get_float("ladd.sigma_std"));
  parts.generator_term = score_distillation_term(config, "ladd", *parts.teacher, parts.student->sigma_data());
  return make_adversarial_distillation(config, std::move(parts), device);
}

}  // namespace distillery
