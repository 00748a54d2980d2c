#include "teachers/teacher_training.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/optim/adam.h>
#include <torch/types.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/augment.h"
#include "data/shuffled_order.h"
#include "data/training_data.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "models/weights.h"
#include "samplers/sampling.h"
#include "teachers/edm_loss.h"
#include "train/checkpoint.h"

namespace distillery {

namespace {

// Streams of the counter-based RNG used by training (distinct from sampling's).
constexpr uint64_t kSigmaStream = 1000, kNoiseStream = 1001;
constexpr int kMaxConsecutiveNonFinite = 10;

struct Recipe {
  int64_t batch, steps, warmup_steps, log_every, checkpoint_every, keep_checkpoints, grid_every, grid_num, grid_steps;
  double lr, beta1, beta2, ema_halflife_images, p_mean, p_std;
  uint64_t seed;
  bool hflip;
};

Recipe recipe_from(const Config& c) {
  return {c.get_int("train.batch"), c.get_int("train.steps"), c.get_int("train.warmup_steps"), c.get_int("log.every"),
          c.get_int("checkpoint.every"), c.get_int("checkpoint.keep"), c.get_int("grid.every"), c.get_int("grid.num"),
          c.get_int("grid.steps"), c.get_float("train.lr"), c.get_float("train.beta1"), c.get_float("train.beta2"),
          c.get_float("train.ema_halflife_images"), c.get_float("loss.p_mean"), c.get_float("loss.p_std"),
          static_cast<uint64_t>(c.get_int("train.seed")), c.get_bool("data.hflip")};
}

}  // namespace

const ConfigSchema& teacher_training_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    add_training_data_fields(s);
    add_network_fields(s);
    s.add({"loss.p_mean", ConfigType::Float, "mean of ln σ during training", "-1.2"});
    s.add({"loss.p_std", ConfigType::Float, "standard deviation of ln σ during training", "1.2"});
    s.add({"train.batch", ConfigType::Int, "images per step", "64"});
    s.add({"train.steps", ConfigType::Int, "optimiser steps", "20000"});
    s.add({"train.lr", ConfigType::Float, "Adam learning rate after warm-up", "5e-4"});
    s.add({"train.warmup_steps", ConfigType::Int, "linear learning-rate warm-up", "1000"});
    s.add({"train.beta1", ConfigType::Float, "Adam β1", "0.9"});
    s.add({"train.beta2", ConfigType::Float, "Adam β2", "0.999"});
    s.add({"train.ema_halflife_images", ConfigType::Float, "EMA half-life in training images", "50000"});
    s.add({"train.seed", ConfigType::Int, "seed of data order, σ, noise and dropout", "0"});
    s.add({"log.every", ConfigType::Int, "steps per stats.jsonl line", "100"});
    s.add({"checkpoint.every", ConfigType::Int, "steps between checkpoints", "1000"});
    s.add({"checkpoint.keep", ConfigType::Int, "checkpoints kept", "3"});
    s.add({"grid.every", ConfigType::Int, "steps between sample grids (EMA, Heun)", "2000"});
    s.add({"grid.num", ConfigType::Int, "images in a grid", "100"});
    s.add({"grid.steps", ConfigType::Int, "Heun steps for grids", "18"});
    return s;
  }();
  return schema;
}

}  // namespace distillery

namespace distillery {

void train_teacher(const TrainingRunOptions& options) {
  const auto config = Config::load(teacher_training_schema(), options.config_file, options.overrides);
  const auto r = recipe_from(config);
  DISTILLERY_CHECK(r.batch > 0 && r.steps > 0 && r.log_every > 0 && r.checkpoint_every > 0 && r.keep_checkpoints > 0,
                   Error("train.batch, train.steps, log.every, checkpoint.every and checkpoint.keep must be positive").file(config.source()));
  const auto& out = options.out_dir;
  const auto checkpoints = prepare_run_directory(options, config), grids = out / "grids";
  std::filesystem::create_directories(grids);

  torch::manual_seed(r.seed);  // initial weights
  const auto model_ptr = NetworkDenoiser::from_config(config), ema_ptr = NetworkDenoiser::from_config(config);
  auto &model = *model_ptr, &ema = *ema_ptr;
  const auto data = load_training_data(config, model.sample_shape());
  const int64_t num_classes = model.num_classes();
  DISTILLERY_CHECK(num_classes == 0 || data.labels.min().item<int64_t>() >= 0,
                   Error("a class-conditional model needs labelled data").field("model.num_classes").hint("add dataset.json to the image folder, or set model.num_classes=0"));
  DISTILLERY_CHECK(num_classes == 0 || data.labels.max().item<int64_t>() < num_classes,
                   Error("the data have more classes than the model").field("model.num_classes").got(std::to_string(num_classes))
                       .expected(fmt::format("at least {}", data.labels.max().item<int64_t>() + 1)));
  const std::vector<int64_t> shape(data.x0.sizes().begin() + 1, data.x0.sizes().end());
  DISTILLERY_CHECK(shape == model.sample_shape(),
                   Error("the model does not fit the data").file(config.source()).field("model")
                       .expected(fmt::format("samples of shape [{}]", fmt::join(shape, ", ")))
                       .got(fmt::format("a model for [{}]", fmt::join(model.sample_shape(), ", "))));
  DISTILLERY_CHECK(!r.hflip || shape.size() == 3, Error("horizontal flips need image data").field("data.hflip").got(config.get_string("data.dataset")));
  const double sigma_data = model.sigma_data();
  const auto ema_pairs = [&] {
    std::vector<std::pair<at::Tensor, at::Tensor>> pairs;
    const auto source = module_tensors(model.module());
    const auto target = module_tensors(ema.module());
    for (size_t i = 0; i < source.size(); ++i) pairs.emplace_back(target[i].second, source[i].second);
    return pairs;
  }();
  {
    torch::NoGradGuard no_grad;
    for (auto& [target, source] : ema_pairs) target.copy_(source);
  }
  ema.module().eval();
  torch::optim::Adam optimizer(model.module().parameters(), torch::optim::AdamOptions(r.lr).betas({r.beta1, r.beta2}).eps(1e-8));

  // Checkpoint files of the model and the EMA are denoiser files, usable as teachers.
  const CheckpointModules parts{{{"model", &model.module(), model.file_metadata()}, {"ema", &ema.module(), ema.file_metadata()}},
                                {{"optimizer", &model.module(), &optimizer}}};
  auto state = options.resume ? resume_newest_checkpoint(checkpoints, parts) : RunCounters{};
  StatsLog stats(out / "stats.jsonl", state.step);

  const double ema_beta = std::pow(0.5, static_cast<double>(r.batch) / r.ema_halflife_images);
  ShuffledOrder order(data.x0.size(0), r.seed);
  int64_t consecutive_nonfinite = 0;
  double loss_sum = 0;
  int64_t loss_count = 0, interval_steps = 0;
  auto interval_start = std::chrono::steady_clock::now();

  auto write_grid = [&](int64_t step) {
    SampleRequest request;
    request.num = r.grid_num;
    request.steps = static_cast<int>(r.grid_steps);
    request.seed = r.seed;
    const auto samples = draw_samples(ema, request).samples;
    const auto path = grids / fmt::format("grid-step-{:07d}.png", step);
    if (shape.size() == 3) write_image_grid(path, samples, 10);
    else if (shape == std::vector<int64_t>{2}) write_scatter_plot(path, samples, {}, fmt::format("EMA samples at step {}, Heun {} steps", step, r.grid_steps));
  };

  Progress progress("train", r.steps, "step", options.show_progress ? stderr : nullptr, state.step);
  model.module().train();
  for (int64_t step = state.step; step < r.steps; ++step) {
    // Everything random in this step is a function of (seed, step).
    torch::manual_seed(fnv1a64(fmt::format("{}:step:{}", r.seed, step)));
    std::vector<int64_t> positions(static_cast<size_t>(r.batch));
    std::iota(positions.begin(), positions.end(), step * r.batch);
    std::vector<int64_t> indices;
    for (auto p : positions) indices.push_back(order.at(p));
    const auto index_tensor = torch::tensor(indices, torch::kInt64);
    auto x0 = data.x0.index_select(0, index_tensor);
    if (r.hflip) x0 = random_hflip(x0);
    const auto labels = num_classes > 0 ? data.labels.index_select(0, index_tensor) : at::Tensor();
    const auto sigma = (r.p_mean + r.p_std * per_sample_normal(r.seed, kSigmaStream, positions, {}, torch::kFloat32)).exp();
    const auto noise = per_sample_normal(r.seed, kNoiseStream, positions, shape, torch::kFloat32);
    const auto loss = edm_loss(model, x0, sigma, noise, labels, sigma_data);

    for (auto& group : optimizer.param_groups())
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(r.lr * std::min(1.0, static_cast<double>(step + 1) / std::max<int64_t>(r.warmup_steps, 1)));
    optimizer.zero_grad();
    loss.backward();
    const double loss_value = loss.item<double>();
    if (!std::isfinite(loss_value)) {
      ++state.nonfinite_skips;
      DISTILLERY_CHECK(++consecutive_nonfinite < kMaxConsecutiveNonFinite,
                       Error(fmt::format("{} consecutive non-finite losses at step {}; stopping without overwriting the last checkpoint",
                                         kMaxConsecutiveNonFinite, step)).hint("lower train.lr or check the data"));
    } else {
      consecutive_nonfinite = 0;
      optimizer.step();
      torch::NoGradGuard no_grad;
      for (auto& [target, source] : ema_pairs) target.lerp_(source, 1.0 - ema_beta);
      loss_sum += loss_value;
      ++loss_count;
    }
    state.step = step + 1;
    ++interval_steps;
    progress.advance();

    if (state.step % r.log_every == 0 || state.step == r.steps) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_start).count();
      stats.write(nlohmann::json{{"step", state.step},
                              {"images", state.step * r.batch},
                              {"loss", loss_count ? loss_sum / loss_count : NAN},
                              {"lr", r.lr * std::min(1.0, static_cast<double>(state.step) / std::max<int64_t>(r.warmup_steps, 1))},
                              {"nonfinite_skips", state.nonfinite_skips},
                              {"sec_per_step", seconds / static_cast<double>(interval_steps)},
                              {"timestamp", std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()}}
                     .dump());
      loss_sum = 0;
      loss_count = 0;
      interval_steps = 0;
      interval_start = std::chrono::steady_clock::now();
    }
    if (state.step % r.checkpoint_every == 0 || state.step == r.steps)
      write_checkpoint(checkpoints, state.step, parts, state.to_json(),
                       r.keep_checkpoints);
    if (r.grid_every > 0 && (state.step % r.grid_every == 0 || state.step == r.steps)) write_grid(state.step);
  }
  progress.finish();
  ema.save(out / "teacher.safetensors", {{"trained_steps", std::to_string(state.step)}, {"dataset", config.get_string("data.dataset")}});
  spdlog::info("wrote {}", (out / "teacher.safetensors").string());
}

}  // namespace distillery
