// defines: DisbackPath, add_disback_fields, make_disback
// Distribution backtracking, DisBack (Zhang et al. 2024, "Distribution Backtracking Builds A
// Faster Convergence Trajectory for One-step Diffusion Distillation"), on DMD2. Score distillation pulls
// the generator toward the teacher's score from the first step, though the generator's
// distribution starts far from the teacher's. DisBack first records how the teacher degrades
// into the initial generator, then has the generator walk that path back.
// - Degradation recording (trainer phase 0, disback.degradation_steps): DMD2's critic, which
//   starts as the teacher, learns the initial generator's samples by denoising score matching
//   while the generator stays as it is. The critic's weights are kept at
//   disback.path_checkpoints evenly spaced points, the last being the critic as the phase ends:
//   the path s_1 … s_N from the teacher s_0 to the initial generator's score.
// - Distribution backtracking (phase 1): DMD2 whose critic starts as s_N, the score of the
//   generator's distribution, and whose real score walks the path back, s_{N−1}, …, s_1 for
//   disback.target_steps steps each, then the teacher for the rest of train.steps.
// The generator's file after phase 0 (student-phase-0.safetensors) is the initial generator.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

// Where each step stands on the path: when the critic is kept, and which score the
// generator follows.
class DisbackPath {
 public:
  DisbackPath(int64_t degradation_steps, int64_t checkpoints, int64_t target_steps);
  int64_t degradation_steps() const { return degradation_steps_; }
  int64_t checkpoints() const { return checkpoints_; }
  int64_t phase_of(int64_t step) const { return step < degradation_steps_ ? 0 : 1; }
  // k in 1..N−1 when the critic, as it stands before degradation step `step`, is s_k; else 0.
  int64_t checkpoint_taken_before(int64_t step) const;
  // The path point whose score the generator follows at backtracking step `step` (0: the teacher).
  int64_t target_at(int64_t step) const;
  // The first step whose target is the teacher.
  int64_t teacher_from() const { return degradation_steps_ + (checkpoints_ - 1) * target_steps_; }

 private:
  int64_t degradation_steps_, checkpoints_, target_steps_;
};

// disback.* plus DMD2's keys (dmd2.*), which the generator and critic are trained with.
void add_disback_fields(ConfigSchema& schema);
// `teacher`: a network teacher spec (teacher.h), which the student and critic start from.
std::unique_ptr<TrainingMethod> make_disback(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
