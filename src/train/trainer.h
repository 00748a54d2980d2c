// defines: TrainingMethod, StepContext, OptimizerSlot, EmaSlot, EmaDecay, ema_halflife_decay, power_ema_decay,
//          NonFiniteUpdate, EvaluationCallback, GridCallback, TrainerCallbacks, add_trainer_fields, run_trainer
// The loop every training method plugs into (EDM's and consistency_models' training loops). A
// method owns its networks and performs one training step; it declares the optimisers it
// updates, the moving averages (EMAs, consistency targets) it wants kept, its phases and its
// own state. The trainer owns everything around it: the step counter, the optimisers (built
// from optimizer.*), learning-rate schedule, gradient clipping, the non-finite guard, the
// averages, checkpoints with exact resume (mid-phase too), stats.jsonl, sample grids, the
// schedule of in-loop evaluations (whose measurement is a callback) and the progress bar.
// Every random draw is a function of (seed, global sample position) and positions are split by
// rank; gradients are averaged over the processes before clipping, so a launch of N processes
// with batch B trains as one process with batch N·B. Only rank 0 writes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "samplers/sampling.h"
#include "train/checkpoint.h"
#include "train/run_options.h"

namespace torch::optim { class Optimizer; }

namespace distillery {

class Config;
class ConfigSchema;
class NetworkDenoiser;
class ProcessGroup;

// A module the method updates through StepContext::update(name, loss); the trainer builds its
// optimiser from optimizer.*. `lr` is the rate after warm-up, which the schedule scales.
struct OptimizerSlot {
  std::string name;  // its checkpoint file is <name>_optimizer.safetensors
  torch::nn::Module* module;
  double lr;
};

// β(step) after update `step` (0-based): target ← β·target + (1 − β)·source.
using EmaDecay = std::function<double(int64_t step)>;

// A moving average the trainer keeps after every applied step: an EMA of the student, or a
// consistency model's target network (β = μ(k)). `target` and `source` have the same tensors.
struct EmaSlot {
  std::string name;  // its checkpoint file is <name>.safetensors
  torch::nn::Module* target;
  torch::nn::Module* source;
  EmaDecay decay;
};

// EDM's EMA: a half-life in training images, β = 0.5^(images per step / half-life).
EmaDecay ema_halflife_decay(double halflife_images, int64_t images_per_step);
// EDM2's power-function EMA (Karras et al. 2024, eq. 3): β = (1 − 1/t)^(γ+1) after the t-th
// update (t = step + 1), whose profile has relative width σ_rel with γ from σ_rel.
EmaDecay power_ema_decay(double gamma);

// Thrown by StepContext::update when a loss or gradient is not finite; the trainer skips the
// rest of the step and counts it. Updates applied earlier in the step (a critic's) stay.
struct NonFiniteUpdate : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class TrainingMethod;
struct TrainerCallbacks;
void run_trainer(TrainingMethod& method, const Config& config, const TrainingRunOptions& options, const TrainerCallbacks& callbacks);

class StepContext {
 public:
  int64_t step = 0;        // 0-based index of this step
  int64_t phase = 0;       // the method's phase this step is in
  uint64_t seed = 0;
  int64_t batch = 0;       // rows per rank
  int64_t rank = 0, world_size = 1;
  c10::Device device = c10::Device(c10::DeviceType::CPU);  // where the method's tensors live

  // The global sample positions of this rank's rows for the `draw`-th independent batch of
  // the step (a method drawing several batches per step numbers them 0..draws_per_step−1).
  // Noise keyed by these positions is the same whatever the number of ranks.
  std::vector<int64_t> positions(int64_t draw = 0) const;
  // The global position of the draw's first row over all ranks: the key of a draw made once
  // for the whole batch, which every rank then makes alike.
  int64_t batch_position(int64_t draw = 0) const;
  int64_t draws_per_step = 1;

  // zero_grad, backward, the gradients averaged over the processes, clip to train.grad_clip,
  // learning-rate schedule, optimiser step — or NonFiniteUpdate before anything is changed (on
  // every rank alike when any rank's loss or gradient is not finite).
  void update(const std::string& optimizer, const at::Tensor& loss);

 private:
  friend void run_trainer(TrainingMethod& method, const Config& config, const TrainingRunOptions& options, const TrainerCallbacks& callbacks);
  struct Slot {
    torch::nn::Module* module;
    torch::optim::Optimizer* optimizer;
    double lr;
  };
  std::map<std::string, Slot> slots_;
  double lr_factor_ = 1.0, grad_clip_ = 0.0;
  const ProcessGroup* processes_ = nullptr;  // null: one process
};

class TrainingMethod {
 public:
  virtual ~TrainingMethod() = default;
  // The generator this run trains (a distillation's student, or a teacher): grids, evaluation
  // and the output EMA are of it. Null for a method that trains something else (the domain
  // classifier), which then has none of them and writes its own output.
  virtual NetworkDenoiser* generator() = 0;
  // How the generator generates (sampler, steps, σ range) for grids and evaluation.
  virtual SampleRequest sampling() const { return {}; }
  // The modules a checkpoint holds besides the optimisers' and the averages' (the trainer's).
  virtual std::vector<CheckpointModule> checkpoint_modules() = 0;
  virtual std::vector<OptimizerSlot> optimizers() = 0;
  virtual std::vector<EmaSlot> averages() { return {}; }
  // Independent noise batches the method draws per step (for StepContext::positions).
  virtual int64_t draws_per_step() const { return 1; }
  // A step's peak memory per row as a multiple of what one differentiated evaluation of the
  // generator allocates per row (train/memory_estimate.h). Allocations overcount what is held
  // at once, so one evaluation's covers a step of most methods; a method whose step holds more
  // says so, from a measurement (docs/measurements.md).
  virtual double activation_memory_factor() const { return 1; }

  // Phases (progressive distillation's rounds): the method is built in phase 0; when a step
  // belongs to another phase, or a run resumes in one, the trainer calls begin_phase(k) and
  // then asks again for the modules, optimisers (new ones, fresh state) and averages. As a
  // phase ends, a generator's result is written as <output stem>-phase-<k>.safetensors.
  virtual int64_t phase_of(int64_t /*step*/) const { return 0; }
  virtual void begin_phase(int64_t /*phase*/) {}
  // As a phase ends, on every rank, before begin_phase of the next: what its generator became
  // (the output EMA when one is kept), for a method that keeps each phase's result (one
  // student per phase) rather than carrying its network on.
  virtual void end_phase(int64_t /*phase*/, const NetworkDenoiser& /*result*/) {}
  // The method's own state (a curriculum's position, counters) as a JSON object, kept in
  // state.json; on resume it is given back before begin_phase.
  virtual std::string state_json() const { return "{}"; }
  virtual void restore_state(const std::string& /*json*/) {}

  // Restarts every network the method built from the student's initial weights (the student,
  // and DMD2's critic, a copy of it) from `initial`, a pretrained network of the student's
  // architecture (multi-student distillation's score-matched smaller students). Error for a
  // method that cannot.
  virtual void start_from(const NetworkDenoiser& initial);

  // One training step; returns named scalars that stats.jsonl averages over log intervals.
  virtual std::map<std::string, double> step(StepContext& context) = 0;
  // After every step whose updates were applied, once the averages have been updated.
  virtual void after_update(const StepContext& /*context*/) {}

  // The output file in the run directory, and the metadata it, each phase's result and the
  // generator's checkpoint files carry besides the architecture (by default: the σ grid
  // `generate` must walk).
  virtual std::string output_file() const { return "student.safetensors"; }
  virtual std::map<std::string, std::string> output_metadata() const;
  // Writes the output to `path` with `metadata` (output_metadata() plus trained_steps), once
  // training has ended: by default the generator's weights, or its output EMA's (`ema`, null
  // when the run keeps none).
  virtual void write_output(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata, const NetworkDenoiser* ema);
};

// Measures the trained network (its EMA when there is one) as sampled by `request`: named
// values for stats.jsonl (fd_fmnist or fd_raw, class_accuracy).
using EvaluationCallback = std::function<std::map<std::string, double>(Denoiser& network, const SampleRequest& request)>;

// Draws `request` from the network (its EMA when there is one) and writes a picture of the
// samples to `path` (a .png), after training step `step`.
using GridCallback = std::function<void(Denoiser& network, const SampleRequest& request, const std::filesystem::path& path, int64_t step)>;

// What the trainer measures and draws without knowing how: handed to it by the command that
// builds the run (eval/in_loop_evaluation.h, eval/sample_grid.h), so the trainer depends on no
// evaluation or image code. Without a grid callback a run writes no grids.
struct TrainerCallbacks {
  EvaluationCallback evaluate = {};  // needed when eval.every > 0
  GridCallback grid = {};
};

// The loop's keys: train.* (batch, steps, warm-up, LR schedule, clipping, the non-finite
// guard, seed), optimizer.*, log.* and checkpoint.* (a method's schema may change their
// defaults with ConfigSchema::set_default). Enough for a method without a generator.
void add_training_loop_fields(ConfigSchema& schema);
// The loop's keys and a generator's: train.ema_halflife_images, grid.* and eval.every/num/seed,
// when and how much to evaluate.
void add_trainer_fields(ConfigSchema& schema);

// Runs `method` to train.steps in options.out_dir (resuming when asked); writes its output file
// (a generator's EMA when train.ema_halflife_images > 0) at the end.
void run_trainer(TrainingMethod& method, const Config& config, const TrainingRunOptions& options, const TrainerCallbacks& callbacks = {});

}  // namespace distillery
