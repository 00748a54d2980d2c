// defines: file_bytes, MixtureRun, run_in, mixture_run, consistency_mixture_run, cd_mixture_run, ctm_mixture_run,
//   ExactFlowMap, pd_mixture_run, record_full, reflow_mixture_run, two_class_images, tiny_image_unet, image_mixture_run,
//   expect_resume_equals_straight, mixture_network_teacher, ladd_mixture_run, one_step_sliced_wasserstein, add_image_run,
//   diffusion2gan_mixture_run, untrained_mixture_teacher, conditional_mixture_run, disback_mixture_run
// Builders of the small distillation runs the method tests share: recipes on the analytic
// mixtures and tiny images, the exact flow map of a Gaussian mixture, stores of whole
// trajectories, and the check that a resumed run equals an uninterrupted one.
#pragma once

#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <unistd.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <algorithm>
#include <fstream>
#include <numeric>
#include <set>
#include <nlohmann/json.hpp>
#include "core/config.h"
#include "core/error.h"
#include "distill/add.h"
#include "distill/cd.h"
#include "distill/common/adversarial_losses.h"
#include "distill/common/discriminator.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/score_distillation.h"
#include "distill/ctm.h"
#include "distill/common/consistency_training.h"
#include "distill/common/sigma_sampling.h"
#include "distill/diffusion2gan.h"
#include "distill/disback.h"
#include "distill/dmd2.h"
#include "distill/ladd.h"
#include "eval/domain_classifier.h"
#include "eval/metrics.h"
#include "kernels/attention.h"
#include "distill/ect.h"
#include "distill/pd.h"
#include "distill/reflow.h"
#include "distill/scm.h"
#include "distill/common/trigflow.h"
#include "models/jvp.h"
#include "distill/registry.h"
#include "io/directory_lock.h"
#include "io/image.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "models/routed_denoiser.h"
#include "teacher_training/teacher_training.h"
#include "teachers/edm_loss.h"
#include "teachers/gaussian_mixture.h"
#include "teachers/student.h"
#include "teachers/teacher.h"
#include "distributed_support.h"
#include "foreign_device.h"
#include "models/weights.h"
#include "train/optimizer.h"
#include "train/trainer.h"
#include "core/rng.h"
#include "samplers/sampler.h"
#include "samplers/sampling.h"
#include "samplers/schedule.h"
#include "trajectories/recorder.h"
#include "trajectories/straightness.h"
#include "trajectories/trajectory_reader.h"
#include "test_support.h"

namespace distillery {

using testing::file_bytes;
using testing::stats_lines;

// A DMD2 recipe for the tests' three-mode mixture: MLP generator and critic from scratch.
struct MixtureRun {
  std::filesystem::path dir;
  std::string teacher;
  TrainingRunOptions options;
};

// A run named `name` in `dir` of `recipe`, distilling the analytic mixture of `spec`.
inline MixtureRun run_in(const std::filesystem::path& dir, const std::string& name, const std::filesystem::path& spec, const std::filesystem::path& recipe,
                         std::vector<std::string> overrides) {
  MixtureRun run{dir, "gmm:" + spec.string(), {}};
  run.options.config_file = recipe;
  run.options.out_dir = dir / name;
  run.options.show_progress = false;
  run.options.overrides = std::move(overrides);
  return run;
}

inline MixtureRun mixture_run(const std::filesystem::path& dir, const std::string& name, int64_t steps, std::vector<std::string> overrides = {}) {
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: dmd2
student: {{init: scratch}}
model: {{kind: mlp, shape: [2], hidden: 64, layers: 2, num_classes: 0}}
precond: {{sigma_data: 1.5}}
dmd2: {{generator_lr: 1.0e-3, critic_lr: 1.0e-3, critic_steps: 3}}
train: {{batch: 128, steps: {}}}
eval: {{every: {}, num: 1000, reference: "gmm:{}", features: raw}}
grid: {{every: 0, num: 500}}
log: {{every: 1}}
checkpoint: {{every: 3}}
)",
                                       steps, steps, (dir / "three_modes.yaml").string());
  return run_in(dir, name, dir / "three_modes.yaml", recipe, std::move(overrides));
}

// A recipe for the mixture: `method` with its own keys `method_keys`, an MLP student from
// scratch under the consistency preconditioning (overrides may change it), trained on samples
// of the mixture.
inline MixtureRun consistency_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::string& method, const std::string& method_keys,
                                          int64_t steps, std::vector<std::string> overrides = {}) {
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: {}
student: {{init: scratch}}
model: {{kind: mlp, shape: [2], hidden: 128, layers: 3, num_classes: 0}}
precond: {{parameterization: consistency, sigma_data: 1.5}}
data: {{dataset: gmm, path: "{}", size: 16384}}
{}: {{{}}}
train: {{batch: 256, steps: {}}}
eval: {{every: {}, num: 1000, reference: "gmm:{}", features: raw}}
grid: {{every: 0, num: 500}}
log: {{every: 10}}
checkpoint: {{every: 100}}
)",
                                       method, (dir / "three_modes.yaml").string(), method, method_keys, steps, steps, (dir / "three_modes.yaml").string());
  return run_in(dir, name, dir / "three_modes.yaml", recipe, std::move(overrides));
}

// CD of the analytic teacher, its Heun step between neighbours of an 18-point grid.
inline MixtureRun cd_mixture_run(const std::filesystem::path& dir, const std::string& name, int64_t steps, std::vector<std::string> overrides = {}) {
  return consistency_mixture_run(dir, name, "cd", "lr: 1.0e-3, grid_points: 18, target_decay: 0.95", steps, std::move(overrides));
}

inline MixtureRun ctm_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::string& keys, int64_t steps,
                                  std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(), {"precond.parameterization=edm", "model.target_time=true"});
  return consistency_mixture_run(dir, name, "ctm", keys, steps, std::move(overrides));
}

// The mixture's exact flow map from σ_max for 2,000 noises (seed 7): Heun with 1,024 steps in
// float64 on the exact score, and the RMS distance of any landing points from it.
struct ExactFlowMap {
  at::Tensor noise, exact;
  explicit ExactFlowMap(Denoiser& teacher) {
    std::vector<int64_t> rows(2000);
    std::iota(rows.begin(), rows.end(), 0);
    noise = per_sample_normal(7, noise_stream::initial, rows, {2}, torch::kFloat64);
    exact = make_sampler("heun")->run(teacher, noise * 80.0, make_sigmas({}, 1024), SampleContext{});
  }
  double rms(const at::Tensor& x) const { return (x.to(torch::kFloat64) - exact).pow(2).sum(1).mean().sqrt().item<double>(); }
};

inline MixtureRun pd_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::string& keys, int64_t steps,
                                 std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(), "precond.parameterization=edm");
  return consistency_mixture_run(dir, name, "pd", keys, steps, std::move(overrides));
}

// A store of `num` Heun trajectories of `teacher` (18 steps, every state kept) in `out`.
inline void record_full(const std::string& teacher, const std::filesystem::path& out, int64_t num, const std::string& labels = "") {
  RecordOptions o;
  o.teacher = teacher;
  o.out = out;
  o.request.num = num;
  o.request.labels = labels;
  o.request.seed = 1;
  o.show_progress = false;
  record_trajectories(o);
}

inline MixtureRun reflow_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::filesystem::path& store, int64_t steps,
                                     std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(), "precond.parameterization=edm");
  return consistency_mixture_run(dir, name, "reflow", fmt::format("lr: 1.0e-3, store: \"{}\"", store.string()), steps, std::move(overrides));
}

// DMD2 with a GAN head on images: a tiny class-conditional UNet generator and critic from
// scratch, distilling an analytic two-class mixture of 8×8 images whose exact draws are the
// real data.
// The two-class mixture of side×side grey images, one class dark (−0.6) and one light (0.6).
inline std::filesystem::path two_class_images(const std::filesystem::path& dir, int64_t side) {
  const auto row = [&](double value) { return fmt::format("[{}]", fmt::join(std::vector<double>(static_cast<size_t>(side * side), value), ", ")); };
  const auto spec = dir / fmt::format("two_images{}.yaml", side);
  std::ofstream(spec) << fmt::format("shape: [1, {}, {}]\nweights: [1, 1]\nmeans: [{}, {}]\nstds: [0.1, 0.1]\nconditional: true\n", side, side, row(-0.6), row(0.6));
  return spec;
}

// model.* of a tiny class-conditional UNet student for those images, from scratch.
inline std::string tiny_image_unet(int64_t side) {
  return fmt::format("model: {{kind: unet, resolution: {}, model_channels: 8, channel_mult: [1, 2], blocks_per_level: 1, attn_resolutions: [], "
                     "channels_per_head: 16, dropout: 0, num_classes: 2}}", side);
}

inline MixtureRun image_mixture_run(const std::filesystem::path& dir, const std::string& name, int64_t steps, std::vector<std::string> overrides = {}) {
  const auto spec = two_class_images(dir, 8);
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: dmd2
student: {{init: scratch}}
{}
dmd2: {{generator_lr: 1.0e-3, critic_lr: 1.0e-3, critic_steps: 2, gan_generator_weight: 0.1, gan_critic_weight: 1.0, gan_range: [0.0, 0.3]}}
data: {{dataset: gmm, path: "{}", size: 512}}
train: {{batch: 16, steps: {}}}
eval: {{every: 0, num: 100}}
grid: {{every: 0, num: 4}}
log: {{every: 1}}
checkpoint: {{every: 2}}
)",
                                       tiny_image_unet(8), spec.string(), steps);
  return run_in(dir, name, spec, recipe, std::move(overrides));
}

// Runs `straight` to the end and `resumed` in two halves (with what a kill leaves behind in
// between); the checkpoints, the student and the logs must be equal byte for byte.
inline void expect_resume_equals_straight(const MixtureRun& straight, const MixtureRun& resumed, int64_t steps, const std::vector<std::string>& files,
                                          const std::vector<std::string>& logged) {
  const auto dir = resumed.options.out_dir;
  run_distillation(straight.options, straight.teacher);
  auto first_half = resumed.options;
  first_half.overrides.push_back(fmt::format("train.steps={}", steps / 2));
  run_distillation(first_half, resumed.teacher);
  std::ofstream(dir / "stats.jsonl", std::ios::app) << "{\"step\": 4, \"dm_lo";
  std::filesystem::create_directories(dir / fmt::format("checkpoints/.step-{:07d}.tmp.1", steps / 2 + 1));
  auto second_half = resumed.options;
  second_half.resume = true;
  run_distillation(second_half, resumed.teacher);
  const auto last = fmt::format("checkpoints/step-{:07d}", steps);
  for (const auto& file : files)
    EXPECT_EQ(file_bytes(straight.options.out_dir / last / file), file_bytes(dir / last / file)) << file;
  EXPECT_EQ(file_bytes(straight.options.out_dir / "student.safetensors"), file_bytes(dir / "student.safetensors"));
  const auto a = stats_lines(straight.options.out_dir), b = stats_lines(dir);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    for (const auto& key : logged) EXPECT_EQ(a[i].value(key, nlohmann::json()), b[i].value(key, nlohmann::json())) << key << " line " << i;
}

// An MLP teacher of the three-mode mixture, trained here through `teacher train`: LADD reads a
// network teacher's features, which the analytic mixture has none of.
inline std::string mixture_network_teacher(const std::filesystem::path& dir, int64_t steps) {
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  std::ofstream(dir / "teacher.yaml") << fmt::format(R"(
data: {{dataset: gmm, path: "{}", size: 16384}}
model: {{kind: mlp, shape: [2], hidden: 64, layers: 2, num_classes: 0}}
precond: {{sigma_data: 1.5}}
train: {{batch: 256, steps: {}, lr: 3.0e-3, warmup_steps: 100, ema_halflife_images: 20000}}
log: {{every: 100}}
checkpoint: {{every: {}}}
grid: {{every: 0}}
)", (dir / "three_modes.yaml").string(), steps, steps);
  TrainingRunOptions options;
  options.config_file = dir / "teacher.yaml";
  options.out_dir = dir / "teacher";
  options.show_progress = false;
  train_teacher(options);
  return options.out_dir.string();
}

// LADD of that teacher: a one-step MLP student from the teacher, real points drawn from the
// mixture, heads on the teacher's input embedding and both residual layers at low noise.
inline MixtureRun ladd_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::string& teacher, int64_t steps,
                                   std::vector<std::string> overrides = {}) {
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: ladd
student: {{init: teacher}}
data: {{dataset: gmm, path: "{}", size: 16384}}
adversarial: {{generator_lr: 1.0e-4, discriminator_lr: 1.0e-3, taps: [layer.0, layer.1, layer.2], r1_weight: 0.1}}
ladd: {{sigma_mean: -1.0, sigma_std: 1.0}}
train: {{batch: 256, steps: {}}}
eval: {{every: {}, num: 1000, reference: "gmm:{}", features: raw}}
grid: {{every: 0, num: 500}}
log: {{every: 10}}
checkpoint: {{every: 100}}
)",
                                       (dir / "three_modes.yaml").string(), steps, steps, (dir / "three_modes.yaml").string());
  auto run = run_in(dir, name, dir / "three_modes.yaml", recipe, std::move(overrides));
  run.teacher = teacher;
  return run;
}

// The sliced W2 distances to 2,000 exact draws of the three-mode mixture of 2,000 one-step
// samples (same noise) of the teacher (an Euler step from σ_max) and of the student file.
inline std::pair<double, double> one_step_sliced_wasserstein(const std::string& teacher, const std::filesystem::path& student) {
  const auto exact = GaussianMixtureSpec::parse(testing::kThreeModes2d, "three_modes.yaml").draw(2000, 99).first;
  SampleRequest one_step;
  one_step.sampler = "euler";
  one_step.steps = 1;
  one_step.num = 2000;
  one_step.seed = 7;
  auto request = student_request(student);
  request.num = one_step.num;
  request.seed = one_step.seed;
  torch::NoGradGuard no_grad;
  return {sliced_wasserstein_distance(draw_samples(*load_teacher(teacher, torch::kCPU), one_step).samples, exact),
          sliced_wasserstein_distance(draw_samples(*NetworkDenoiser::load(student), request).samples, exact)};
}

// ADD on 28×28 images (the classifier's size): a tiny class-conditional UNet student from
// scratch, the analytic two-class mixture of images as teacher and, drawn from it, as real data.
inline MixtureRun add_image_run(const std::filesystem::path& dir, const std::string& name, int64_t steps, std::vector<std::string> overrides = {}) {
  const auto spec = two_class_images(dir, 28);
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: add
student: {{init: scratch}}
{}
adversarial: {{generator_lr: 1.0e-3, discriminator_lr: 1.0e-3, r1_weight: 0.01}}
add: {{classifier: "{}", distill_weight: 2.5}}
data: {{dataset: gmm, path: "{}", size: 256}}
train: {{batch: 8, steps: {}}}
eval: {{every: 0, num: 100}}
grid: {{every: 0, num: 4}}
log: {{every: 1}}
checkpoint: {{every: 3}}
)",
                                       tiny_image_unet(28), (testing::kSourceDir / "assets/eval/fmnist-classifier.safetensors").string(), spec.string(), steps);
  return run_in(dir, name, spec, recipe, std::move(overrides));
}

// Diffusion2GAN of a network teacher of the mixture: a one-step MLP student trained on the
// teacher's ODE pairs (noise, endpoint) from a store, by regression and by heads on the
// teacher's features of each point stacked with those of its noise.
inline MixtureRun diffusion2gan_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::string& teacher,
                                            const std::filesystem::path& store, int64_t steps, std::vector<std::string> overrides = {}) {
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: diffusion2gan
student: {{init: teacher}}
adversarial: {{generator_lr: 1.0e-4, discriminator_lr: 1.0e-3, taps: [layer.1, layer.2], r1_weight: 0.1}}
diffusion2gan: {{store: "{}", distance: l2, regression_weight: 1.0}}
train: {{batch: 256, steps: {}}}
eval: {{every: {}, num: 1000, reference: "gmm:{}", features: raw}}
grid: {{every: 0, num: 500}}
log: {{every: 10}}
checkpoint: {{every: 100}}
)",
                                       store.string(), steps, steps, (dir / "three_modes.yaml").string());
  auto run = run_in(dir, name, dir / "three_modes.yaml", recipe, std::move(overrides));
  run.teacher = teacher;
  return run;
}

// A network teacher of the mixture's shape, untrained (seed 1), for tests of what a run keeps
// rather than what it learns; the mixture's file beside it in `dir`.
inline std::string untrained_mixture_teacher(const std::filesystem::path& dir) {
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  torch::manual_seed(1);
  NetworkDenoiser(MLPConfig{.shape = {2}, .hidden = 32, .layers = 2, .num_classes = 0}, {.sigma_data = 1.5}).save(dir / "mlp.safetensors");
  return (dir / "mlp.safetensors").string();
}

// Multi-student distillation of the conditional three-mode mixture (class c is mode c): MLP
// students from scratch, as in mixture_run, with `method` dmd2 or msd.
inline MixtureRun conditional_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::string& method, int64_t steps,
                                          std::vector<std::string> overrides = {}) {
  std::ofstream(dir / "labelled.yaml") << testing::kThreeModes2d << "conditional: true\n";
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: {}
student: {{init: scratch}}
model: {{kind: mlp, shape: [2], hidden: 32, layers: 2, num_classes: 3}}
precond: {{sigma_data: 1.5}}
dmd2: {{generator_lr: 1.0e-3, critic_lr: 1.0e-3, critic_steps: 2}}
train: {{batch: 32, steps: {}, ema_halflife_images: 100}}
eval: {{every: 0, num: 100}}
grid: {{every: 0, num: 30}}
log: {{every: 1}}
checkpoint: {{every: 2}}
)",
                                       method, steps);
  return run_in(dir, name, dir / "labelled.yaml", recipe, std::move(overrides));
}

// DisBack of a network teacher of the mixture: one-step MLP students from the teacher, the
// path of `checkpoints` critic checkpoints over `degradation` steps, a checkpoint of the run at
// the end of the degradation.
inline MixtureRun disback_mixture_run(const std::filesystem::path& dir, const std::string& name, const std::string& teacher, int64_t steps,
                                      int64_t degradation, int64_t checkpoints, int64_t target_steps, std::vector<std::string> overrides = {}) {
  const auto recipe = dir / (name + ".yaml");
  std::ofstream(recipe) << fmt::format(R"(
method: disback
student: {{init: teacher}}
dmd2: {{generator_lr: 1.0e-4, critic_lr: 1.0e-3, critic_steps: 3}}
disback: {{degradation_steps: {}, path_checkpoints: {}, target_steps: {}}}
train: {{batch: 256, steps: {}}}
eval: {{every: {}, num: 1000, reference: "gmm:{}", features: raw}}
grid: {{every: 0, num: 500}}
log: {{every: 10}}
checkpoint: {{every: {}, keep: 100}}
)",
                                       degradation, checkpoints, target_steps, steps, steps, (dir / "three_modes.yaml").string(), degradation);
  auto run = run_in(dir, name, dir / "three_modes.yaml", recipe, std::move(overrides));
  run.teacher = teacher;
  return run;
}

}  // namespace distillery
