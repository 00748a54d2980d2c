// defines: ProgressiveRounds, pd_target, add_pd_fields, make_pd
// Progressive distillation, PD (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling
// of Diffusion Models"). Round r's student takes N_r = N_0/2^r deterministic DDIM steps (in
// EDM's formulation the Euler step x_s = D + (s/t)·(x_t − D)) on every 2^(r+1)-th point of a
// Karras grid of 2·N_0 steps; its teacher takes two steps for each of them, on every 2^r-th
// point: the original teacher in round 0 (with pd.solver: Heun lets round 0 start from 2·N_0
// accurate steps instead of the paper's thousands of DDIM steps; pd.original_substeps = K splits
// each of them into K, on a grid of 2·N_0·K steps, so round 0 can start at fewer student steps
// from an equally accurate teacher), then the previous round's student, by DDIM. For a row at
// the student's step t → s, the teacher's steps through the grid points between them carry
// x_t = x + t·z to x_s; the target is the x̃ whose one DDIM step from t
// lands there, x̃ = (x_s − (s/t)·x_t)/(1 − s/t), and the loss max(SNR, 1)·‖D_θ(x_t; t) − x̃‖²
// with SNR = 1/t² in EDM's coordinates (the paper's truncated-SNR weighting of the x-error).
// The student keeps its preconditioning: EDM's and TrigFlow's are the paper's v-prediction
// family; an ε-prediction student (VP) cannot make the last step from σ_max (the paper, §4).
// Each round is a trainer phase of pd.round_steps steps; the student goes on into the next
// round, where its weights as the round ended become the frozen teacher. As each round ends the
// trainer writes student-phase-<r>.safetensors, an N_r-step student. The clean inputs x are
// data.* examples, or with pd.store the final states of a trajectory store recorded from the
// teacher (distillation without the dataset, from the teacher's own samples; their labels too).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace distillery {

class Config;
class ConfigSchema;
class Denoiser;
class Sampler;
class TrainingMethod;
struct SampleContext;

// The σ grids of the rounds, each decreasing and ending with 0: round r's student walks every
// K·2^(r+1)-th point of the Karras grid of 2·N_0·K steps, its teacher every K·2^r-th (two steps
// per student step), except round 0's original teacher, which walks every point (2·K steps per
// student step); from N_0 student steps down to N_final (both powers of two).
class ProgressiveRounds {
 public:
  ProgressiveRounds(double sigma_min, double sigma_max, double rho, int64_t start_steps, int64_t final_steps, int64_t original_substeps = 1);
  int64_t count() const { return count_; }
  int64_t student_steps(int64_t round) const { return start_steps_ >> round; }
  std::vector<double> student_sigmas(int64_t round) const { return every(original_substeps_ << (round + 1)); }  // N_r + 1 values
  // 2·N_r + 1 values; round 0: 2·N_0·K + 1
  std::vector<double> teacher_sigmas(int64_t round) const { return every(round == 0 ? 1 : original_substeps_ << round); }

 private:
  std::vector<double> every(int64_t stride) const;
  std::vector<double> base_;
  int64_t start_steps_, original_substeps_, count_;
};

// Each row's target x̃: the teacher's solver steps from x_t along its path (path[k][row]: the
// row's σ after k steps, from t = path.front() to s = path.back()), without gradient, read as
// the denoised value whose single DDIM step from t lands where they did.
at::Tensor pd_target(Denoiser& teacher, const Sampler& solver, const at::Tensor& x_t, const std::vector<std::vector<double>>& path,
                     const SampleContext& context);

void add_pd_fields(ConfigSchema& schema);
// `teacher`: a teacher spec (teacher.h); the config holds student.*, pd.*, data.*, model.* (scratch).
std::unique_ptr<TrainingMethod> make_pd(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
