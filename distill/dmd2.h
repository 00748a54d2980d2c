// defines: Dmd2Settings, dmd2_settings_from, add_dmd2_fields, distribution_matching_loss, Dmd2Training, make_dmd2_training,
//          make_dmd2
// Distribution matching distillation, DMD2 (Yin et al. 2024, "Improved Distribution Matching
// Distillation for Fast Image Synthesis"): a generator initialised from the teacher is pushed
// along the difference of two scores of its own noised samples, the frozen teacher's ("real")
// and a critic's ("fake") that keeps learning the generator's current distribution by
// denoising score matching, several critic updates per generator update. Optional: a
// regression loss on the teacher's (noise, sample) pairs from a trajectory store (DMD1), GAN
// heads on named feature taps of the critic (its bottleneck by default) that tell noised real
// images (data.*) from noised generated ones (softplus losses, DMD2 §4.2), and k-step students trained with backward
// simulation (the generator's own intermediate states).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace distillery {

class Config;
class ConfigSchema;
class Denoiser;
class NetworkDenoiser;

struct Dmd2Settings {
  std::vector<double> student_sigmas;  // the student's σ grid (first: where noise enters)
  double generator_lr = 1e-5, critic_lr = 1e-5;
  int64_t critic_steps = 5;            // critic updates per generator update
  double guidance = 1.0;               // classifier-free guidance of the real score
  // Fractions of a 1000-point Karras grid (σ_min..σ_max) from which the distribution-matching
  // and critic σ are drawn (DMD2: [0.02, 0.98] and [0, 1]).
  double dm_low = 0.02, dm_high = 0.98, critic_low = 0.0, critic_high = 1.0;
  double regression_weight = 0.0;      // × MSE between G(noise) and the teacher's sample
  std::string regression_store;        // trajectory store with the pairs
  // GAN: weights of the generator's softplus(−logit(fake)) and of the critic's
  // softplus(logit(fake)) + softplus(−logit(real)) (both 0: off), and the σ range (same grid)
  // of the noise both images get before the heads see them; the critic's taps with a head
  // (each head's loss is averaged over the taps).
  double gan_generator_weight = 0.0, gan_critic_weight = 0.0;
  double gan_low = 0.0, gan_high = 1.0;
  std::vector<std::string> gan_taps = {"bottleneck"};
  bool gan() const { return gan_generator_weight > 0; }
};

void add_dmd2_fields(ConfigSchema& schema);
Dmd2Settings dmd2_settings_from(const Config& config);

// DMD's surrogate loss for generated samples x (with gradient) and both scores' denoised
// estimates of their noised copies: 0.5·mean((x − sg(x − g))²) whose gradient in x is g/numel,
// g = (D_fake − D_real) normalised per sample by mean |x − D_real| (non-finite values → 0).
at::Tensor distribution_matching_loss(const at::Tensor& x, const at::Tensor& real_denoised, const at::Tensor& fake_denoised);

// DMD2 as the inner loop of a method that changes what it matches (DisBack, distill/disback.h).
class Dmd2Training : public TrainingMethod {
 public:
  // The score the generator is pulled toward, guided by dmd2.guidance as the teacher's is: a
  // network that outlives its use, or the teacher when null.
  virtual void set_real_score(Denoiser* real) = 0;
  // Off: a step makes the critic's updates only, on samples of the generator as it stands.
  virtual void set_generator_training(bool on) = 0;
  virtual NetworkDenoiser& critic() = 0;
};

// `teacher`: a teacher spec (teacher.h); the config holds student.*, dmd2.*, model.* (scratch).
// Every network and tensor of the method lives on `device`.
std::unique_ptr<Dmd2Training> make_dmd2_training(const Config& config, const std::string& teacher, const c10::Device& device);
std::unique_ptr<TrainingMethod> make_dmd2(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
