#include "distill/ladd.h"

#include "core/config.h"
#include "distill/common/adversarial_distillation.h"
#include "distill/common/score_distillation.h"
#include "models/network_denoiser.h"
#include "train/trainer.h"

namespace distillery {

void add_ladd_fields(ConfigSchema& s) {
  add_adversarial_fields(s, "[enc.1, bottleneck, dec.1]");
  s.add({"ladd.sigma_mean", ConfigType::Float, "m of the discriminator's noise level, σ = exp(m + s·n) (LADD's logit-normal m in rectified-flow time)", "1"});
  s.add({"ladd.sigma_std", ConfigType::Float, "s of the same", "1"}, NumberRange::above(0));
  add_score_distillation_fields(s, "ladd", "0");
}

std::unique_ptr<TrainingMethod> make_ladd(const Config& config, const std::string& teacher_spec, const c10::Device& device) {
  auto [parts, network] = parts_with_network_teacher(config, teacher_spec, device, "LADD");
  parts.features = noised_teacher_features(*network, configured_taps(config, "adversarial.taps", network->feature_taps()),
                                           config.get_float("ladd.sigma_mean"), config.get_float("ladd.sigma_std"));
  parts.generator_term = score_distillation_term(config, "ladd", *parts.teacher, parts.student->sigma_data());
  return make_adversarial_distillation(config, std::move(parts), device);
}

}  // namespace distillery
