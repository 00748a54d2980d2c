#include "distill/reflow.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/store_pairs.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"
#include "train/trainer.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

std::vector<double> reflow_sigmas(double sigma_max, int64_t steps) {
  const double t_max = sigma_max / (1 + sigma_max);
  std::vector<double> sigmas;
  for (int64_t k = 0; k < steps; ++k) {
    const double t = t_max * (1 - static_cast<double>(k) / static_cast<double>(steps));
    sigmas.push_back(k == 0 ? sigma_max : t / (1 - t));
  }
  return sigmas;
}

double annealed_randomness(int64_t step, int64_t anneal_steps) {
  if (anneal_steps <= 0) return 0.0;
  return std::max(0.0, 1.0 - static_cast<double>(step) / static_cast<double>(anneal_steps));
}

void add_reflow_fields(ConfigSchema& s) {
  s.add({"reflow.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "1e-4"}, NumberRange::above(0));
  s.add({"reflow.pairs", ConfigType::String, "the coupling: independent (1-RF: data.* and fresh noise) or store (k-reflow: reflow.store's noise and endpoints)",
         "store", false, {"store", "independent"}});
  s.add({"reflow.store", ConfigType::String, "trajectory store of the previous flow (the teacher): its noise and final states are the pairs", "\"\""});
  s.add({"reflow.anneal_steps", ConfigType::Int, "SlimFlow's annealing reflow: the store's noise mixed with fresh noise, √(1 − β²)·z + β·ε, "
         "β falling linearly from 1 to 0 over this many steps (0: the teacher's coupling from the start)", "0"}, NumberRange::between(0, 100000000));
  s.add({"reflow.sample_steps", ConfigType::Int, "the student's Euler steps, uniform in rectified-flow time (grids and evaluation)", "1"},
        NumberRange::between(1, 1000));
}

namespace {

class Reflow final : public TrainingMethod {
 public:
  Reflow(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : lr_(config.get_float("reflow.lr")), anneal_steps_(config.get_int("reflow.anneal_steps")), device_(device) {
    auto teacher = load_teacher(teacher_spec, device);
    sigma_min_ = teacher->sigma_min();
    sigma_max_ = teacher->sigma_max();
    student_ = make_student_network(config, teacher_spec, *teacher);
    if (config.get_string("reflow.pairs") == "store") {
      pairs_ = open_teacher_store(config, "reflow.store", teacher_spec, *student_,
                                  "reflow.pairs: store needs the teacher's trajectory store (or set reflow.pairs=independent)");
    } else {
      DISTILLERY_CHECK(anneal_steps_ == 0, Error("annealing eases a student into a store's coupling; independent pairs have none").file(config.source())
                                               .field("reflow.anneal_steps").expected("0 with reflow.pairs: independent"));
      data_.emplace(config, student_->sample_shape(), student_->num_classes(), noise_stream::reflow_flip, device);
    }
    sampling_.sampler = "euler";
    sampling_.sigmas = config.get_float_list("student.sigmas");
    if (sampling_.sigmas.empty()) sampling_.sigmas = reflow_sigmas(sigma_max_, config.get_int("reflow.sample_steps"));
    sampling_.steps = static_cast<int>(sampling_.sigmas.size());
  }

  NetworkDenoiser* generator() override { return student_.get(); }
  SampleRequest sampling() const override { return sampling_; }
  std::map<std::string, std::string> output_metadata() const override {
    auto metadata = TrainingMethod::output_metadata();
    nlohmann::json grids = nlohmann::json::object();
    for (const int64_t steps : {1, 2, 4}) grids[std::to_string(steps)] = reflow_sigmas(sigma_max_, steps);
    metadata["student_step_sigmas"] = grids.dump();
    return metadata;
  }
  std::vector<CheckpointModule> checkpoint_modules() override { return {{"generator", &student_->module(), student_->file_metadata()}}; }
  std::vector<OptimizerSlot> optimizers() override { return {{"generator", &student_->module(), lr_}}; }

  std::map<std::string, double> step(StepContext& context) override {
    const auto positions = context.positions();
    at::Tensor x, z, labels;
    std::map<std::string, double> stats;
    if (pairs_) {
      // The reading's share of the step: stats.jsonl's pair_read_seconds against sec_per_step.
      const auto start = std::chrono::steady_clock::now();
      const auto pair = pairs_for_step(*pairs_, context);
      stats["pair_read_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      x = pair.sample.to(device_);
      z = pair.noise.to(device_);
      if (student_->num_classes() > 0) labels = pair.labels.to(device_);
      if (const double beta = annealed_randomness(context.step, anneal_steps_); beta > 0) {
        const auto fresh = per_sample_normal(context.seed, noise_stream::reflow_noise, positions, student_->sample_shape(), z.options());
        z = std::sqrt(1 - beta * beta) * z + beta * fresh;
        stats["randomness"] = beta;
      }
    } else {
      std::tie(x, labels) = data_->batch(context.seed, positions);
      z = per_sample_normal(context.seed, noise_stream::reflow_noise, positions, student_->sample_shape(), x.options());
    }
    // t uniform over the teacher's σ range, in rectified-flow time.
    const double t_min = sigma_min_ / (1 + sigma_min_), t_max = sigma_max_ / (1 + sigma_max_);
    const auto u = uniform_per_sample(context.seed, noise_stream::reflow_time, positions).contiguous();
    std::vector<double> sigma(positions.size()), weight(positions.size());
    for (size_t r = 0; r < positions.size(); ++r) {
      const double t = t_min + (t_max - t_min) * u.data_ptr<double>()[r];
      sigma[r] = t / (1 - t);
      weight[r] = 1 / (t * t);
    }
    const auto predicted = denoise_rows(*student_, x + per_row(sigma, x) * z, sigma, labels);
    const auto loss = (per_row(weight, x) * (predicted - x).square()).flatten(1).mean(1).mean();
    context.update("generator", loss);
    stats["reflow_loss"] = loss.item<double>();
    return stats;
  }

 private:
  double lr_, sigma_min_ = 0, sigma_max_ = 0;
  int64_t anneal_steps_;
  c10::Device device_;
  std::unique_ptr<NetworkDenoiser> student_;
  std::unique_ptr<TrajectoryReader> pairs_;
  std::optional<RealDataStream> data_;
  SampleRequest sampling_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_reflow(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<Reflow>(config, teacher, device);
}

}  // namespace distillery
