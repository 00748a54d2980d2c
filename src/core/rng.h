// defines: philox4x32_10, fill_normal, per_sample_normal, uniform_per_sample
// Counter-based random numbers: the noise of sample `i` is a pure function of
// (seed, stream, i), so it never depends on batch size, thread count, process count or
// device. `stream` separates independent uses (initial noise, per-step sampler noise).
// Values are drawn on the host and copied to the device: the same bits on every device by
// construction (a device-side Philox would have to reproduce the host's log and cos exactly).
#pragma once

#include <c10/core/TensorOptions.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace at { class Tensor; }

namespace distillery {

// Philox4x32 with 10 rounds (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Standard normals for one sample (Box-Muller over Philox blocks), n values into out.
void fill_normal(uint64_t seed, uint64_t stream, uint64_t sample_index, double* out, size_t n);

// [indices.size(), *sample_shape] standard normal tensor with `options` (dtype and device);
// row r is sample indices[r].
at::Tensor per_sample_normal(uint64_t seed, uint64_t stream, const std::vector<int64_t>& indices,
                             const std::vector<int64_t>& sample_shape, const c10::TensorOptions& options);

// [N] float64 on the CPU, uniform in [0, 1) per position (the normal CDF of the counter-based normals).
at::Tensor uniform_per_sample(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions);

// Every stream the project draws from, in one registry so two uses never collide (checked at
// compile time below). A stream marked "+ k" owns the range [base, base + width).
namespace noise_stream {
inline constexpr uint64_t initial = 0;             // a sampler's starting noise
inline constexpr uint64_t sampler_step = 1;        // + solver step (< max_solver_steps): stochastic samplers' fresh noise
inline constexpr uint64_t max_solver_steps = 999;
inline constexpr uint64_t teacher_sigma = 1000;    // EDM teacher training: ln σ
inline constexpr uint64_t teacher_noise = 1001;    //   and the noise added at it
inline constexpr uint64_t teacher_label_drop = 1002;  //   which rows train unconditionally (label dropout)
inline constexpr uint64_t teacher_flip = 1003;        //   flips of the training images
inline constexpr uint64_t dropout_layers = 256;       // the most dropout layers one step's keyed masks tell apart
inline constexpr uint64_t teacher_dropout = 1100;     //   + dropout layer (< dropout_layers): the teacher's dropout masks
inline constexpr uint64_t dmd2_generator_noise = 3000;  // DMD2: the generator's input noise
inline constexpr uint64_t dmd2_student_step = 3001;     //   which of a k-step student's σ a row starts at
inline constexpr uint64_t dmd2_dm_sigma = 3002, dmd2_dm_noise = 3003;          // distribution matching
inline constexpr uint64_t dmd2_critic_sigma = 3004, dmd2_critic_noise = 3005;  // the critic's denoising loss
inline constexpr uint64_t dmd2_gan_fake_sigma = 3006, dmd2_gan_fake_noise = 3007, dmd2_gan_real_sigma = 3008, dmd2_gan_real_noise = 3009;
inline constexpr uint64_t dmd2_real_flip = 3010;        //   flips of real images
inline constexpr uint64_t dmd2_simulation = 3100;       //   + student step (< 100): backward simulation's re-noising
inline constexpr uint64_t consistency_pair = 4000;      // consistency models: which adjacent σ pair (or time) a row trains at
inline constexpr uint64_t consistency_noise = 4001;     //   the noise that takes the row's example to its σ
inline constexpr uint64_t consistency_time = 4002, consistency_second_time = 4003;  //   continuous times (ECT, sCM, CTM)
inline constexpr uint64_t consistency_dsm_sigma = 4004, consistency_dsm_noise = 4005;  //   CTM's denoising auxiliary loss
inline constexpr uint64_t consistency_flip = 4006;      //   flips of the training examples
inline constexpr uint64_t pd_step = 5000;               // progressive distillation: which student step a row trains at
inline constexpr uint64_t pd_noise = 5001;              //   the noise that takes the row's example to its σ
inline constexpr uint64_t pd_flip = 5002;               //   flips of the training examples
inline constexpr uint64_t reflow_time = 5100;           // rectified flow: the time t of a row's point on its line
inline constexpr uint64_t reflow_noise = 5101;          //   1-RF's noise end of the line
inline constexpr uint64_t reflow_flip = 5102;           //   flips of the training examples
inline constexpr uint64_t instaflow_guidance_time = 5200;  // SlimFlow's flow-guided term: the time of a row's point on the student's line
inline constexpr uint64_t adversarial_student_step = 6000;   // adversarial distillation: which student σ a row's real example is noised to
inline constexpr uint64_t adversarial_student_noise = 6001;  //   and the noise that takes it there
inline constexpr uint64_t adversarial_real_flip = 6002;      //   flips of real images
inline constexpr uint64_t ladd_real_sigma = 6003, ladd_real_noise = 6004, ladd_fake_sigma = 6005, ladd_fake_noise = 6006;  // LADD: the noise the discriminator's teacher sees
inline constexpr uint64_t add_distill_sigma = 6007, add_distill_noise = 6008;  // ADD: the teacher's re-noising of generated images
inline constexpr uint64_t diffusion2gan_augmentation = 6010;  // Diffusion2GAN: + k (< 6), the ensembled distance's augmentation parameters
inline constexpr uint64_t msd_score_matching_sigma = 6100, msd_score_matching_noise = 6101, msd_score_matching_flip = 6102;  // MSD: teacher score matching of a smaller student
inline constexpr uint64_t sliced_wasserstein_directions = 7000;  // evaluation: the sliced Wasserstein distance's projections
inline constexpr uint64_t classifier_flip = 7100;     // the evaluation classifier's training: flips of its images
inline constexpr uint64_t classifier_dropout = 7200;  //   + dropout layer (< dropout_layers): its dropout masks

struct Range {
  uint64_t base, width;
};
inline constexpr Range kRanges[] = {{initial, 1},
                                    {sampler_step, max_solver_steps},
                                    {teacher_sigma, 1},
                                    {teacher_noise, 1},
                                    {teacher_label_drop, 1},
                                    {teacher_flip, 1},
                                    {teacher_dropout, dropout_layers},
                                    {dmd2_generator_noise, 1},
                                    {dmd2_student_step, 1},
                                    {dmd2_dm_sigma, 1},
                                    {dmd2_dm_noise, 1},
                                    {dmd2_critic_sigma, 1},
                                    {dmd2_critic_noise, 1},
                                    {dmd2_gan_fake_sigma, 1},
                                    {dmd2_gan_fake_noise, 1},
                                    {dmd2_gan_real_sigma, 1},
                                    {dmd2_gan_real_noise, 1},
                                    {dmd2_real_flip, 1},
                                    {dmd2_simulation, 100},
                                    {consistency_pair, 1},
                                    {consistency_noise, 1},
                                    {consistency_time, 1},
                                    {consistency_second_time, 1},
                                    {consistency_dsm_sigma, 1},
                                    {consistency_dsm_noise, 1},
                                    {consistency_flip, 1},
                                    {pd_step, 1},
                                    {pd_noise, 1},
                                    {pd_flip, 1},
                                    {reflow_time, 1},
                                    {reflow_noise, 1},
                                    {reflow_flip, 1},
                                    {instaflow_guidance_time, 1},
                                    {adversarial_student_step, 1},
                                    {adversarial_student_noise, 1},
                                    {adversarial_real_flip, 1},
                                    {ladd_real_sigma, 1},
                                    {ladd_real_noise, 1},
                                    {ladd_fake_sigma, 1},
                                    {ladd_fake_noise, 1},
                                    {add_distill_sigma, 1},
                                    {add_distill_noise, 1},
                                    {diffusion2gan_augmentation, 6},
                                    {msd_score_matching_sigma, 1},
                                    {msd_score_matching_noise, 1},
                                    {msd_score_matching_flip, 1},
                                    {sliced_wasserstein_directions, 1},
                                    {classifier_flip, 1},
                                    {classifier_dropout, dropout_layers}};
constexpr bool disjoint() {
  for (const auto& a : kRanges)
    for (const auto& b : kRanges)
      if (&a != &b && a.base < b.base + b.width && b.base < a.base + a.width) return false;
  return true;
}
static_assert(disjoint(), "two RNG streams overlap");
}  // namespace noise_stream

}  // namespace distillery
