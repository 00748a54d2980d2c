// Speed of the pieces every job leans on, measured side by side in one run so the ratios
// (Heun vs Euler per sample, float32 vs float64, safetensors parse throughput) are meaningful
// on a noisy machine. Report medians: --benchmark_repetitions=5 --benchmark_report_aggregates_only.
#include <benchmark/benchmark.h>
#include <torch/types.h>
#include <torch/optim/adam.h>

#include <numeric>

#include "core/config.h"
#include "core/memory.h"
#include "core/rng.h"
#include "models/network_denoiser.h"
#include "teachers/edm_loss.h"
#include "teacher_training/teacher_training.h"
#include "io/safetensors.h"
#include "samplers/sampling.h"
#include "teachers/gaussian_mixture.h"

// In bench_paths.cpp alone, so this file compiles alike in every checkout (compiler cache).
extern const char* const kBenchSourceDir;

namespace distillery {
namespace {

GaussianMixtureDenoiser ring() {
  return GaussianMixtureDenoiser(GaussianMixtureSpec::parse(
      "dim: 2\nweights: [1, 1, 1, 1]\nmeans: [[2, 0], [0, 2], [-2, 0], [0, -2]]\nstds: [0.3, 0.3, 0.3, 0.3]\n", "ring"));
}

// Samples per second from the analytic teacher; args: solver index (0 euler, 1 heun), steps.
void BM_SampleGmm(benchmark::State& state) {
  auto gmm = ring();
  SampleRequest request;
  request.sampler = state.range(0) == 0 ? "euler" : "heun";
  request.steps = static_cast<int>(state.range(1));
  request.num = 4096;
  request.batch = 4096;
  for (auto _ : state) benchmark::DoNotOptimize(draw_samples(gmm, request).samples.data_ptr());
  state.SetItemsProcessed(state.iterations() * request.num);
  state.SetLabel(request.sampler);
}
BENCHMARK(BM_SampleGmm)->Args({0, 18})->Args({1, 18})->Unit(benchmark::kMillisecond);

// safetensors parse + validate throughput on a 64 MiB file of 64 tensors.
void BM_SafetensorsParse(benchmark::State& state) {
  std::vector<uint8_t> payload(1 << 20, 7);
  std::vector<TensorBytes> tensors;
  for (int i = 0; i < 64; ++i) tensors.push_back({"layer" + std::to_string(i), SafetensorsDtype::F32, {1 << 18}, payload});
  const auto bytes = serialize_safetensors(tensors, {{"config", "{}"}});
  for (auto _ : state) benchmark::DoNotOptimize(SafetensorsFile::parse(bytes, "bench").tensors().size());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_SafetensorsParse)->Unit(benchmark::kMillisecond);

// One EDM training step (forward, backward, Adam) of the shipped teacher's UNet at batch 64;
// tools/bench_unet_vs_python.sh runs the Python twin on the same recipe beside it.
void BM_UNetTrainStep(benchmark::State& state) {
  const auto recipe = Config::load(teacher_training_schema(), std::string(kBenchSourceDir) + "/configs/teacher/fmnist.yaml");
  const auto model_ptr = NetworkDenoiser::from_config(recipe);
  auto& model = *model_ptr;
  model.module().train();
  torch::optim::Adam optimizer(model.module().parameters(), torch::optim::AdamOptions(1e-4));
  const int64_t batch = state.range(0);
  const auto x0 = torch::rand({batch, 1, 28, 28}) * 2 - 1;
  const auto labels = torch::randint(0, 10, {batch}, torch::kInt64);
  for (auto _ : state) {
    const auto loss = edm_loss(model, x0, (torch::randn({batch}) * 1.2 - 1.2).exp(), torch::randn_like(x0), labels, 0.5);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_UNetTrainStep)->Arg(64)->Unit(benchmark::kMillisecond);

// Teacher sampling speed: images/s for the shipped teacher's architecture at batch 64 with
// Heun, 18 steps = 35 NFE (speed does not depend on the weights' values).
void BM_TeacherSampleHeun35Nfe(benchmark::State& state) {
  const auto recipe = Config::load(teacher_training_schema(), std::string(kBenchSourceDir) + "/configs/teacher/fmnist.yaml");
  const auto teacher_ptr = NetworkDenoiser::from_config(recipe);
  auto& teacher = *teacher_ptr;
  teacher.module().eval();
  SampleRequest request;
  request.num = 64;
  request.batch = 64;
  request.steps = 18;
  for (auto _ : state) benchmark::DoNotOptimize(draw_samples(teacher, request).samples.data_ptr());
  state.SetItemsProcessed(state.iterations() * request.num);
}
BENCHMARK(BM_TeacherSampleHeun35Nfe)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace distillery

// The programs' allocator settings, as the `distillery` command has them.
int main(int argc, char** argv) {
  distillery::keep_freed_memory();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
