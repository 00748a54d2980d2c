#include "train/trainer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <ATen/autocast_mode.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/bfloat16_autocast.h"
#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/process_group.h"
#include "core/progress.h"
#include "io/directory_lock.h"
#include "io/image.h"
#include "models/network_denoiser.h"
#include "models/weights.h"
#include "train/memory_estimate.h"
#include "train/optimizer.h"

namespace distillery {

int64_t StepContext::batch_position(int64_t draw) const { return (step * draws_per_step + draw) * world_size * batch; }

std::vector<int64_t> StepContext::positions(int64_t draw) const {
  std::vector<int64_t> out(static_cast<size_t>(batch));
  const int64_t first = batch_position(draw) + rank * batch;
  for (int64_t i = 0; i < batch; ++i) out[static_cast<size_t>(i)] = first + i;
  return out;
}

namespace {

// Each rank's loss is a mean over its own rows, so the mean of the ranks' gradients is the
// gradient of one process holding every rank's rows. A parameter keeps no gradient when no rank
// has one (the optimiser then skips it, as one process would). `poisoned` (this rank's loss is
// not finite) makes the sum NaN on every rank, so every rank skips the update alike.
void average_gradients(const ProcessGroup& processes, const std::vector<at::Tensor>& parameters, bool poisoned) {
  std::vector<at::Tensor> gradients;
  std::vector<float> present;
  for (const auto& p : parameters) {
    gradients.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
    present.push_back(p.grad().defined() ? 1.0F : 0.0F);
    if (poisoned) gradients.back().fill_(std::numeric_limits<double>::quiet_NaN());
  }
  if (parameters.empty()) return;
  auto presence = torch::tensor(present, torch::TensorOptions().device(parameters.front().device()));
  auto exchanged = gradients;
  exchanged.push_back(presence);
  processes.sum(exchanged, "gradients");
  presence = presence.cpu();
  const auto* any_rank_has = presence.data_ptr<float>();
  const auto world_size = static_cast<double>(processes.world_size());
  for (size_t i = 0; i < parameters.size(); ++i) {
    if (any_rank_has[i] == 0) continue;
    auto parameter = parameters[i];
    if (!parameter.grad().defined()) parameter.mutable_grad() = gradients[i];
    parameter.grad().div_(world_size);
  }
}

}  // namespace

void StepContext::update(const std::string& name, const at::Tensor& loss) {
  const auto slot = slots_.find(name);
  DISTILLERY_CHECK(slot != slots_.end(), Error(fmt::format("the method updates an optimiser it did not declare: '{}'", name)));
  const bool finite_loss = std::isfinite(loss.item<double>());
  const bool several = processes_ && processes_->world_size() > 1;
  if (!finite_loss && !several) throw NonFiniteUpdate(name + " loss");
  auto& [module, optimizer, lr] = slot->second;
  optimizer->zero_grad();
  // Gradients reach this optimiser's parameters only: a generator's loss read through the
  // critic (DMD2's GAN term) costs no critic weight gradients, and leaves none behind.
  if (finite_loss) loss.backward({}, std::nullopt, false, module->parameters());
  if (several) average_gradients(*processes_, module->parameters(), !finite_loss);
  const double norm = torch::nn::utils::clip_grad_norm_(module->parameters(), grad_clip_ > 0 ? grad_clip_ : std::numeric_limits<double>::infinity());
  if (!std::isfinite(norm)) {
    optimizer->zero_grad();
    throw NonFiniteUpdate(name + (finite_loss ? " gradient" : " loss"));
  }
  for (auto& group : optimizer->param_groups()) group.options().set_lr(lr * lr_factor_);
  optimizer->step();
  // Under bf16 autocast the casts of weights are cached until the step's scope ends; a later
  // forward pass of this step (DMD2's generator through the critic just updated) must see the
  // weights as they are now.
  at::autocast::clear_cache();
}

EmaDecay ema_halflife_decay(double halflife_images, int64_t images_per_step) {
  const double beta = std::pow(0.5, static_cast<double>(images_per_step) / halflife_images);
  return [beta](int64_t) { return beta; };
}

EmaDecay power_ema_decay(double gamma) {
  return [gamma](int64_t step) { return std::pow(1.0 - 1.0 / static_cast<double>(step + 1), gamma + 1.0); };
}

void add_training_loop_fields(ConfigSchema& s) {
  add_optimizer_fields(s);
  s.add({"train.batch", ConfigType::Int, "samples per step (per rank)", "32"}, NumberRange::between(1, 1 << 20));
  s.add({"train.steps", ConfigType::Int, "training steps", "1000"}, NumberRange::at_least(1));
  s.add({"train.warmup_steps", ConfigType::Int, "linear learning-rate warm-up", "0"}, NumberRange::at_least(0));
  s.add({"train.lr_schedule", ConfigType::String, "after warm-up: constant, or a cosine or linear decay to 0 at the schedule's last step", "constant",
         false, {"constant", "cosine", "linear"}});
  s.add({"train.decay_steps", ConfigType::Int,
         "cosine or linear: decay over the last this many steps, constant before (0: every step after warm-up); a run extended by --resume can end in a decay",
         "0"}, NumberRange::at_least(0));
  // Progressive distillation's paper anneals the learning rate to 0 within each round, with a
  // fresh optimiser: each round is a training run of its own.
  s.add({"train.lr_schedule_scope", ConfigType::String,
         "run: one warm-up and decay over train.steps; phase: they restart in each of the method's phases (progressive distillation's rounds, "
         "multi-student distillation's students), each decay ending at 0 at its phase's last step",
         "run", false, {"run", "phase"}});
  s.add({"train.grad_clip", ConfigType::Float, "clip each optimiser's gradient norm to this (0: off)", "10"}, NumberRange::at_least(0));
  s.add({"train.max_nonfinite", ConfigType::Int, "stop after this many consecutive steps with a non-finite loss or gradient", "10"}, NumberRange::at_least(1));
  s.add({"train.seed", ConfigType::Int, "seed of every random draw (noise, σ, data order)", "0"}, NumberRange::at_least(0));
  s.add({"train.precision", ConfigType::String,
         "fp32, or bf16: the step's matrix products and convolutions autocast to bfloat16 (weights, gradients, optimiser state, "
         "averages and the losses' reductions stay float32)",
         "fp32", false, {"fp32", "bf16"}});
  s.add({"log.every", ConfigType::Int, "steps per stats.jsonl line", "10"}, NumberRange::at_least(1));
  s.add({"checkpoint.every", ConfigType::Int, "steps between checkpoints", "100"}, NumberRange::at_least(1));
  s.add({"checkpoint.keep", ConfigType::Int, "checkpoints kept", "2"}, NumberRange::at_least(1));
}

void add_trainer_fields(ConfigSchema& s) {
  add_training_loop_fields(s);
  s.add({"train.ema_halflife_images", ConfigType::Float, "EMA of the trained network, half-life in training images (0: no EMA)", "0"}, NumberRange::at_least(0));
  s.add({"grid.every", ConfigType::Int, "steps between sample grids (0: only at the end)", "500"}, NumberRange::at_least(0));
  s.add({"grid.num", ConfigType::Int, "samples in a grid", "100"}, NumberRange::between(1, 10000));
  s.add({"eval.every", ConfigType::Int, "steps between in-loop evaluations (0: none)", "0"}, NumberRange::at_least(0));
  s.add({"eval.num", ConfigType::Int, "samples per evaluation (fixed seed, the same every time)", "1000"}, NumberRange::between(1, 10000000));
  s.add({"eval.seed", ConfigType::Int, "seed of the evaluation samples", "1000000"}, NumberRange::at_least(0));
}

namespace {

enum class LrSchedule { constant, cosine, linear };

struct TrainerSettings {
  bool bf16 = false;
  int64_t batch, steps, warmup_steps, decay_steps, max_nonfinite, log_every, checkpoint_every, keep, grid_every, grid_num, eval_every, eval_num;
  double grad_clip, ema_halflife_images;
  LrSchedule schedule;
  bool schedule_per_phase;
  uint64_t seed, eval_seed;
};

LrSchedule lr_schedule_from(const std::string& name) {
  return name == "cosine" ? LrSchedule::cosine : name == "linear" ? LrSchedule::linear : LrSchedule::constant;
}

// A run without a generator reads only the loop's keys (add_training_loop_fields): no EMA,
// grids or evaluations.
TrainerSettings settings_from(const Config& c, bool has_generator) {
  TrainerSettings s{c.get_string("train.precision") == "bf16",
                    c.get_int("train.batch"),        c.get_int("train.steps"),     c.get_int("train.warmup_steps"),
                    c.get_int("train.decay_steps"),  c.get_int("train.max_nonfinite"), c.get_int("log.every"),       c.get_int("checkpoint.every"),
                    c.get_int("checkpoint.keep"),    0,                             1,
                    0,                               1,                             c.get_float("train.grad_clip"),
                    0.0,                             lr_schedule_from(c.get_string("train.lr_schedule")),
                    c.get_string("train.lr_schedule_scope") == "phase", static_cast<uint64_t>(c.get_int("train.seed")), 0};
  if (has_generator) {
    s.grid_every = c.get_int("grid.every");
    s.grid_num = c.get_int("grid.num");
    s.eval_every = c.get_int("eval.every");
    s.eval_num = c.get_int("eval.num");
    s.ema_halflife_images = c.get_float("train.ema_halflife_images");
    s.eval_seed = static_cast<uint64_t>(c.get_int("eval.seed"));
  }
  return s;
}

// The steps [first, end) one warm-up and decay span: the run, or each of the method's phases.
struct ScheduleSpan {
  int64_t first, end;
};

std::vector<ScheduleSpan> schedule_spans(const TrainerSettings& s, const TrainingMethod& method, const Config& c) {
  std::vector<ScheduleSpan> spans{{0, s.steps}};
  if (s.schedule_per_phase) {
    // Phases follow one another in step order, so each one's end is found by bisection: a run of
    // any length is scanned in a few calls per phase.
    spans.clear();
    for (int64_t first = 0; first < s.steps;) {
      const int64_t phase = method.phase_of(first);
      int64_t inside = first, beyond = s.steps;
      while (beyond - inside > 1) {
        const int64_t middle = inside + (beyond - inside) / 2;
        (method.phase_of(middle) == phase ? inside : beyond) = middle;
      }
      spans.push_back({first, beyond});
      first = beyond;
    }
  }
  for (const auto& span : spans) {
    const int64_t room = span.end - span.first - s.warmup_steps;
    const auto bound = s.schedule_per_phase ? fmt::format("the phase's steps - train.warmup_steps] = [0, {}] for the phase of steps {}..{}", room,
                                                          span.first, span.end - 1)
                                            : fmt::format("train.steps - train.warmup_steps] = [0, {}]", room);
    DISTILLERY_CHECK(s.decay_steps == 0 || s.decay_steps <= room, Error(fmt::format("train.decay_steps must lie in [0, {}", bound))
                         .file(c.source())
                         .field("train.decay_steps")
                         .got(fmt::format("{} (train.steps {}, train.warmup_steps {})", s.decay_steps, s.steps, s.warmup_steps)));
  }
  return spans;
}

double lr_factor(const TrainerSettings& s, const std::vector<ScheduleSpan>& spans, int64_t step) {
  const auto span = *std::prev(std::upper_bound(spans.begin(), spans.end(), step, [](int64_t value, const ScheduleSpan& x) { return value < x.first; }));
  const int64_t local = step - span.first, length = span.end - span.first;
  if (local < s.warmup_steps) return static_cast<double>(local + 1) / static_cast<double>(s.warmup_steps);
  if (s.schedule == LrSchedule::constant) return 1.0;
  const int64_t decay = s.decay_steps > 0 ? s.decay_steps : length - s.warmup_steps, start = length - decay;
  if (local < start) return 1.0;
  const double progress = static_cast<double>(local - start) / static_cast<double>(std::max<int64_t>(decay, 1));
  return s.schedule == LrSchedule::cosine ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
}

// The logged values (sums over the interval's steps) as means over every rank's rows: each rank's
// values are means over its own rows.
void mean_over_processes(const ProcessGroup& processes, std::map<std::string, double>& sums, c10::Device device) {
  if (processes.world_size() == 1 || sums.empty()) return;
  std::vector<double> values;
  for (const auto& [name, sum] : sums) values.push_back(sum);
  auto summed = torch::tensor(values, torch::TensorOptions().dtype(torch::kDouble)).to(device);
  processes.sum({summed}, "the logged statistics");
  summed = summed.cpu();
  size_t i = 0;
  for (auto& [name, sum] : sums) sum = summed[static_cast<int64_t>(i++)].item<double>() / static_cast<double>(processes.world_size());
}

// fd_vs_step.png from the evaluations logged in stats.jsonl so far (log scale: FD falls by
// orders of magnitude).
void plot_evaluations(const std::filesystem::path& out, const std::string& label) {
  PlotSeries series{label, {}, {}};
  std::string metric;
  std::ifstream in(out / "stats.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto entry = nlohmann::json::parse(line, nullptr, false);
    for (const char* key : {"fd_fmnist", "fd_raw"})
      if (entry.is_object() && entry.contains(key) && entry[key].is_number() && entry[key].get<double>() > 0) {
        series.x.push_back(entry.at("step").get<double>());
        series.y.push_back(entry[key].get<double>());
        metric = key;
      }
  }
  if (!series.x.empty()) write_line_plot(out / "fd_vs_step.png", {series}, fmt::format("{} against training step", metric), true);
}

}  // namespace

// Written into student files so `generate` walks the σ grid the student was trained on, and
// draws the classes it learned when it learned only some.
std::map<std::string, std::string> TrainingMethod::output_metadata() const {
  const auto request = sampling();
  std::map<std::string, std::string> metadata = {{"student_sampler", request.sampler}, {"student_sigmas", nlohmann::json(request.sigmas).dump()}};
  if (!request.labels.empty()) metadata["student_labels"] = request.labels;
  return metadata;
}

void TrainingMethod::start_from(const NetworkDenoiser& /*initial*/) {
  throw Error("this method cannot start its student from a pretrained network");
}

void TrainingMethod::write_output(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata, const NetworkDenoiser* ema) {
  const auto* trained = generator();
  DISTILLERY_CHECK(trained, Error("a method without a generator must write its own output").file(path.string()));
  (ema ? *ema : *trained).save(path, metadata);
}

namespace {

// What state.json holds: the trainer's counters, the phase of the last step taken and the
// method's own state.
struct RunState {
  int64_t step = 0, nonfinite_skips = 0, phase = 0;
  nlohmann::json method = nlohmann::json::object();

  std::string to_json() const { return nlohmann::json{{"step", step}, {"nonfinite_skips", nonfinite_skips}, {"phase", phase}, {"method", method}}.dump(); }
  static RunState from_json(const std::string& text) {
    const auto json = nlohmann::json::parse(text);
    // Counters as JSON integers: nlohmann's cast of a float beyond int64 is undefined.
    for (const char* key : {"step", "nonfinite_skips", "phase"})
      DISTILLERY_CHECK(!json.contains(key) || json.at(key).is_number_integer(), Error(fmt::format("checkpoint state '{}' is not an integer", key)));
    return {json.at("step").get<int64_t>(), json.value("nonfinite_skips", int64_t{0}), json.value("phase", int64_t{0}),
            json.value("method", nlohmann::json::object())};
  }
};

// A moving average with its tensor pairs (average, source) resolved once per phase.
struct Average {
  std::vector<std::pair<at::Tensor, at::Tensor>> pairs;
  EmaDecay decay;
};

// A module in eval mode for the scope's life, its mode restored after.
class EvalMode {
 public:
  explicit EvalMode(torch::nn::Module& module) : module_(module), was_training_(module.is_training()) { module_.eval(); }
  ~EvalMode() { module_.train(was_training_); }
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

// What the trainer builds around the method's current phase.
struct PhaseParts {
  std::vector<std::unique_ptr<torch::optim::Optimizer>> optimizers;
  std::unique_ptr<NetworkDenoiser> ema;  // the output EMA (train.ema_halflife_images)
  std::vector<Average> averages;
  CheckpointModules checkpoint;
};

Average resolve(const EmaSlot& slot) {
  const auto target = module_tensors(*slot.target), source = module_tensors(*slot.source);
  DISTILLERY_CHECK(target.size() == source.size(), Error(fmt::format("the moving average '{}' does not have its source's tensors", slot.name)));
  Average average{{}, slot.decay};
  for (size_t i = 0; i < source.size(); ++i) {
    DISTILLERY_CHECK(target[i].first == source[i].first && target[i].second.sizes() == source[i].second.sizes(),
                     Error(fmt::format("the moving average '{}' does not have its source's tensors", slot.name)).expected(source[i].first).got(target[i].first));
    average.pairs.emplace_back(target[i].second, source[i].second);
  }
  return average;
}

}  // namespace

void run_trainer(TrainingMethod& method, const Config& config, const TrainingRunOptions& options, const TrainerCallbacks& callbacks) {
  // Whether the method trains a generator is fixed for the run; which network it is may change
  // with a phase (progressive distillation's rounds), so it is asked for where it is used.
  const bool has_generator = method.generator() != nullptr;
  const auto s = settings_from(config, has_generator);
  const auto schedule = schedule_spans(s, method, config);
  const auto optimizer_spec = optimizer_spec_from(config);
  const auto& out = options.out_dir;
  // Before anything is written: a refused run leaves no directory to resume.
  if (options.check_memory) require_memory(training_memory(method, s.batch), options.runtime.device, true, "train.batch");
  const auto& processes = options.runtime.processes();
  // Rank 0 alone writes the run directory (the other ranks' share of it is their gradients),
  // and prepares it (the recipe, the inputs, what a kill left) before any rank reads it.
  const bool writes = options.runtime.rank == 0;
  std::optional<DirectoryLock> lock;
  if (writes) lock.emplace(out, ".lock", "training run");
  const auto checkpoints = writes ? prepare_run_directory(options, config) : out / "checkpoints", grids = out / "grids";
  if (has_generator && writes) std::filesystem::create_directories(grids);
  processes.barrier("the prepared run directory");

  StepContext context;
  context.seed = s.seed;
  context.batch = s.batch;
  context.rank = options.runtime.rank;
  context.world_size = options.runtime.world_size;
  context.device = options.runtime.device;
  context.draws_per_step = method.draws_per_step();
  context.grad_clip_ = s.grad_clip;
  context.processes_ = &processes;

  // Optimisers (fresh), the output EMA, the averages and the checkpoint's parts for the
  // method's current phase.
  const auto assemble = [&] {
    PhaseParts parts;
    context.slots_.clear();
    for (const auto& slot : method.optimizers()) {
      parts.optimizers.push_back(make_optimizer(optimizer_spec, *slot.module, slot.lr));
      DISTILLERY_CHECK(context.slots_.emplace(slot.name, StepContext::Slot{slot.module, parts.optimizers.back().get(), slot.lr}).second,
                       Error(fmt::format("the method declares the optimiser '{}' twice", slot.name)));
      parts.checkpoint.optimizers.push_back({slot.name + "_optimizer", slot.module, parts.optimizers.back().get(), optimizer_spec});
    }
    parts.checkpoint.modules = method.checkpoint_modules();
    for (const auto& slot : method.averages()) parts.averages.push_back(resolve(slot));
    auto* const generator = method.generator();
    if (!generator) return parts;
    if (s.ema_halflife_images > 0) {
      parts.ema = generator->clone();
      parts.averages.push_back(resolve({"ema", &parts.ema->module(), &generator->module(), ema_halflife_decay(s.ema_halflife_images, s.batch * context.world_size)}));
      parts.checkpoint.modules.push_back({"ema", &parts.ema->module(), parts.ema->file_metadata()});
    }
    // The generator's checkpoint files (and the EMA's) are usable as they are, like the output.
    for (auto& module : parts.checkpoint.modules)
      if (module.module == &generator->module() || module.name == "ema")
        for (auto& [key, value] : method.output_metadata()) module.metadata.insert_or_assign(key, value);
    return parts;
  };
  int64_t phase = 0;  // the method's phase as built
  const auto enter_phase = [&](int64_t next) {
    if (next != phase) method.begin_phase(next);
    phase = next;
  };

  RunState state;
  PhaseParts current;
  bool assembled = false, resumed = false;
  if (options.resume) {
    const auto saved = read_newest_checkpoint(checkpoints, [&](const std::string& json) {
      state = RunState::from_json(json);
      method.restore_state(state.method.dump());
      enter_phase(state.phase);
      current = assemble();
      assembled = true;
      return current.checkpoint;
    });
    resumed = saved.has_value();
    if (saved) {
      spdlog::info("resuming {} from step {}{}", out.string(), state.step, state.phase > 0 ? fmt::format(" (phase {})", state.phase) : "");
    } else {
      state = RunState{};
      method.restore_state("{}");
      enter_phase(0);
      assembled = false;
    }
  }
  if (!assembled) current = assemble();
  // Every rank read the same checkpoint: they must agree on where they stand, and none may go on
  // while another still reads (rank 0's next checkpoint may delete the one read).
  if (processes.world_size() > 1) {
    auto resumed_step = torch::full({1}, state.step, torch::TensorOptions().dtype(torch::kLong).device(context.device));
    processes.broadcast({resumed_step}, "the step resumed from");
    const auto rank0_step = resumed_step.item<int64_t>();
    DISTILLERY_CHECK(rank0_step == state.step, Error(fmt::format("process {} resumed {} at step {}, and rank 0 at step {}", context.rank, out.string(),
                                                                 state.step, rank0_step))
                                                  .hint("every process must see the same run directory (one machine, or a shared file system)"));
  }
  const auto share_rank0_networks = [&] {
    std::vector<at::Tensor> tensors;
    for (const auto& module : current.checkpoint.modules)
      for (auto& [name, tensor] : module_tensors(*module.module)) tensors.push_back(tensor);
    processes.broadcast(tensors, "the networks' weights");
  };
  share_rank0_networks();
  // What grids and evaluations show (only asked for when there is a generator), in eval mode:
  // a network trained in training mode (a teacher's dropout) is shown as it will be used.
  const auto shown = [&]() -> NetworkDenoiser& { return current.ema ? *current.ema : *method.generator(); };

  std::optional<StatsLog> stats;
  // A run killed before its first checkpoint starts again from nothing, its log included.
  if (writes) stats.emplace(out / "stats.jsonl", resumed ? state.step : -1);

  const auto curve_label = std::filesystem::path(method.output_file()).stem().string();  // "student", "teacher"
  const auto sampling_for = [&](uint64_t seed, int64_t num) {
    auto request = method.sampling();
    request.seed = seed;
    request.num = num;
    // A method may show only the classes its generator learns (one student of several).
    if (method.generator()->num_classes() == 0) request.labels.clear();
    else if (request.labels.empty()) request.labels = "all";
    return request;
  };
  const auto& evaluate = callbacks.evaluate;
  DISTILLERY_CHECK(s.eval_every == 0 || evaluate, Error("this run has no in-loop evaluation to run every eval.every steps").file(config.source())
                                                       .field("eval.every").hint("set eval.every=0"));
  const auto evaluation = [&](uint64_t seed, int64_t num) {
    const auto request = sampling_for(seed, num);
    const EvalMode eval_mode(shown().module());
    nlohmann::json result = {{"eval_num", num}, {"eval_nfe", BatchSampler(shown(), request).nfe()}};
    for (const auto& [name, value] : evaluate(shown(), request)) result[name] = value;
    return result;
  };
  const auto write_grid = [&](int64_t step) {
    if (!has_generator || !callbacks.grid) return;
    const EvalMode eval_mode(shown().module());
    callbacks.grid(shown(), sampling_for(s.seed, s.grid_num), grids / fmt::format("grid-step-{:07d}.png", step), step);
  };

  // The starting point of the FD-vs-step curve (every rank draws its share of the samples).
  if (s.eval_every > 0 && state.step == 0) {
    auto line = nlohmann::json{{"step", 0}};
    line.update(evaluation(s.eval_seed, s.eval_num));
    if (writes) {
      stats->write(line.dump());
      plot_evaluations(out, curve_label);
    }
  }

  std::map<std::string, double> sums;
  int64_t counted = 0, interval_steps = 0, consecutive_nonfinite = 0;
  std::string last_nonfinite;  // what the last skipped update found non-finite
  auto interval_start = std::chrono::steady_clock::now();
  Progress progress(curve_label, s.steps, "step", options.show_progress && writes ? stderr : nullptr, state.step);
  // What a result file carries: the method's metadata and how far it was trained.
  const auto result_metadata = [&] {
    auto metadata = method.output_metadata();
    metadata["trained_steps"] = std::to_string(state.step);
    return metadata;
  };
  for (int64_t step = state.step; step < s.steps; ++step) {
    if (const auto next = method.phase_of(step); next != phase) {
      if (has_generator) {
        const NetworkDenoiser& result = current.ema ? *current.ema : *method.generator();
        // Each phase's result stays usable as it ended: progressive distillation's N-step
        // student of every round.
        if (writes) {
          const auto path = out / fmt::format("{}-phase-{}.safetensors", curve_label, phase);
          result.save(path, result_metadata());
          spdlog::info("wrote {}", path.string());
        }
        method.end_phase(phase, result);
      }
      spdlog::info("step {}: phase {} begins", step, next);
      enter_phase(next);
      current = assemble();
      share_rank0_networks();
    }
    // Torch's own generator, for whatever a method still draws from it: a function of (seed, step) too.
    torch::manual_seed(fnv1a64(fmt::format("{}:step:{}", s.seed, step)));
    context.step = step;
    context.phase = phase;
    context.lr_factor_ = lr_factor(s, schedule, step);
    try {
      std::optional<Bfloat16Autocast> autocast;
      if (s.bf16) autocast.emplace(context.device.type());
      const auto values = method.step(context);
      autocast.reset();
      for (const auto& [name, value] : values) sums[name] += value;
      ++counted;
      consecutive_nonfinite = 0;
      {
        torch::NoGradGuard no_grad;
        for (auto& average : current.averages) {
          const double beta = average.decay(step);
          for (auto& [target, source] : average.pairs) target.lerp_(source, 1.0 - beta);
        }
      }
      method.after_update(context);
    } catch (const NonFiniteUpdate& e) {
      ++state.nonfinite_skips;
      last_nonfinite = e.what();
      spdlog::warn("step {}: non-finite {}; the update is skipped", step, e.what());
      DISTILLERY_CHECK(++consecutive_nonfinite < s.max_nonfinite,
                       Error(fmt::format("{} consecutive steps with non-finite updates (last: {}) at step {}; stopping, the last checkpoint is kept",
                                         consecutive_nonfinite, e.what(), step))
                           .hint("lower the learning rates or check the teacher and data"));
    }
    state.step = step + 1;
    state.phase = phase;
    ++interval_steps;
    progress.advance();
    const bool last = state.step == s.steps;
    const bool logged = state.step % s.log_every == 0 || last, checkpointed = state.step % s.checkpoint_every == 0 || last;
    const auto trained_until = std::chrono::steady_clock::now();  // timing excludes evaluation, checkpoints and grids
    if (logged) mean_over_processes(processes, sums, context.device);
    // Every rank draws its share of an evaluation's samples.
    nlohmann::json evaluated;
    if (s.eval_every > 0 && (state.step % s.eval_every == 0 || last)) evaluated = evaluation(s.eval_seed, s.eval_num);
    // No rank goes on past a checkpoint before it is on disk.
    const auto checkpoint_written = [&] { processes.barrier(fmt::format("the checkpoint of step {}", state.step)); };
    if (!writes) {
      if (logged) {
        sums.clear();
        counted = interval_steps = 0;
      }
      if (checkpointed) checkpoint_written();
      continue;
    }

    nlohmann::json line;
    if (logged) {
      const double seconds = std::chrono::duration<double>(trained_until - interval_start).count();
      line = {{"step", state.step},
              {"images", state.step * s.batch * context.world_size},
              {"lr_factor", lr_factor(s, schedule, step)},
              {"nonfinite_skips", state.nonfinite_skips},
              {"sec_per_step", seconds / static_cast<double>(interval_steps)},
              {"timestamp", std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()}};
      if (phase > 0) line["phase"] = phase;
      for (const auto& [name, sum] : sums) line[name] = counted ? sum / static_cast<double>(counted) : NAN;
      sums.clear();
      counted = interval_steps = 0;
    }
    if (!evaluated.is_null()) {
      if (line.is_null()) line = {{"step", state.step}};
      line.update(evaluated);
    }
    if (!line.is_null()) stats->write(line.dump());
    if (line.contains("eval_num")) plot_evaluations(out, curve_label);
    if (checkpointed) {
      state.method = nlohmann::json::parse(method.state_json());
      write_checkpoint(checkpoints, state.step, current.checkpoint, state.to_json(), s.keep);
      checkpoint_written();
    }
    if ((s.grid_every > 0 && state.step % s.grid_every == 0) || last) write_grid(state.step);
    if (logged) interval_start = std::chrono::steady_clock::now();
  }
  progress.finish();
  // Its output would be the network it started from, as if trained.
  DISTILLERY_CHECK(state.nonfinite_skips < state.step,
                   Error(fmt::format("every one of the {} training steps had a non-finite update (the last: {}); nothing was trained, no output is written",
                                     state.step, last_nonfinite.empty() ? "before this resume" : last_nonfinite))
                       .hint("lower the learning rates, or look for a non-finite value in the data, the teacher's weights or the recipe"));
  if (writes) {
    const auto path = out / method.output_file();
    method.write_output(path, result_metadata(), current.ema.get());
    spdlog::info("wrote {}", path.string());
  }
}

}  // namespace distillery
