// defines: TrainingMethod, StepContext, OptimizerSlot, NonFiniteUpdate, TrainerCallbacks, add_trainer_fields, run_trainer
// The loop every distillation method plugs into. A method owns its networks and optimisers
// and performs one training step; the trainer owns everything around it: the step counter,
// learning-rate schedule, gradient clipping, the non-finite guard, the student's EMA,
// checkpoints with exact resume, stats.jsonl, sample grids, the schedule of in-loop
// evaluations (whose measurement is a callback) and the progress bar. Every random draw is a function of (seed, global sample position), positions
// are split by rank and only rank 0 writes, so results will not depend on the number of
// processes once multi-process training exists.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "samplers/sampling.h"
#include "train/checkpoint.h"
#include "train/run_options.h"

namespace distillery {

class Config;
class ConfigSchema;
class NetworkDenoiser;

// An optimiser a method updates through StepContext::update; `base_lr` is the rate after
// warm-up, which the schedule scales.
struct OptimizerSlot {
  std::string name;
  torch::nn::Module* module;
  torch::optim::Adam* optimizer;
  double base_lr;
};

// Thrown by StepContext::update when a loss or gradient is not finite; the trainer skips the
// rest of the step and counts it. Updates applied earlier in the step (a critic's) stay.
struct NonFiniteUpdate : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class TrainingMethod;
class StepContext;
struct TrainerCallbacks;
void run_trainer(TrainingMethod& method, const Config& config, const TrainingRunOptions& options, const TrainerCallbacks& callbacks);

class StepContext {
 public:
  int64_t step = 0;        // 0-based index of this step
  uint64_t seed = 0;
  int64_t batch = 0;       // rows per rank
  int64_t rank = 0, world_size = 1;
  c10::Device device = c10::Device(c10::DeviceType::CPU);  // where the method's tensors live

  // The global sample positions of this rank's rows for the `draw`-th independent batch of
  // the step (a method drawing several batches per step numbers them 0..draws_per_step−1).
  // Noise keyed by these positions is the same whatever the number of ranks.
  std::vector<int64_t> positions(int64_t draw = 0) const;
  int64_t draws_per_step = 1;

  // zero_grad, backward, clip to train.grad_clip, learning-rate schedule, Adam step — or
  // NonFiniteUpdate before anything is changed.
  void update(const std::string& optimizer, const at::Tensor& loss);

 private:
  friend void run_trainer(TrainingMethod& method, const Config& config, const TrainingRunOptions& options, const TrainerCallbacks& callbacks);
  std::map<std::string, OptimizerSlot> slots_;
  double lr_factor_ = 1.0, grad_clip_ = 0.0;
};

class TrainingMethod {
 public:
  virtual ~TrainingMethod() = default;
  // The network this run trains (a distillation's student, or a teacher): grids, evaluation
  // and the EMA are of it; its final weights (the EMA's when there is one) are the run's output.
  virtual NetworkDenoiser& network() = 0;
  // How that network generates (sampler, steps, σ range) for grids and evaluation.
  virtual SampleRequest sampling() const = 0;
  // Every module and optimiser whose state a checkpoint must hold (the trainer adds the EMA).
  virtual CheckpointModules checkpoint_parts() = 0;
  virtual std::vector<OptimizerSlot> optimizers() = 0;
  // Independent noise batches the method draws per step (for StepContext::positions).
  virtual int64_t draws_per_step() const { return 1; }
  // One training step; returns named scalars that stats.jsonl averages over log intervals.
  virtual std::map<std::string, double> step(StepContext& context) = 0;
  // The output file in the run directory, and the metadata it and the network's checkpoint
  // files carry besides the architecture (by default: the σ grid `generate` must walk).
  virtual std::string output_file() const { return "student.safetensors"; }
  virtual std::map<std::string, std::string> output_metadata() const;
};

// What the trainer measures without knowing how: handed to it by the command that builds the
// run (eval/in_loop_evaluation.h), so the trainer depends on no evaluation code.
// Measures the trained network (its EMA when there is one) as sampled by `request`: named
// values for stats.jsonl (fd_fmnist or fd_raw, class_accuracy).
using EvaluationCallback = std::function<std::map<std::string, double>(Denoiser& network, const SampleRequest& request)>;
struct TrainerCallbacks {
  EvaluationCallback evaluate = {};  // needed when eval.every > 0
};

// train.*, log.*, checkpoint.*, grid.* keys and eval.every/num/seed, when and how much to
// evaluate (a method's schema may change their defaults with ConfigSchema::set_default).
void add_trainer_fields(ConfigSchema& schema);

// Runs `method` to train.steps in options.out_dir (resuming when asked); writes its output file
// (the EMA when train.ema_halflife_images > 0) at the end.
void run_trainer(TrainingMethod& method, const Config& config, const TrainingRunOptions& options, const TrainerCallbacks& callbacks = {});

}  // namespace distillery
