// Device-follow: sampling, recording and teacher training run on a second CPU device type
// that refuses any operation mixing it with a CPU tensor (foreign_device.h), as CUDA does, so
// library code that makes a tensor on the CPU instead of on its inputs' device fails here,
// on a machine without a GPU. Sampling and recording give the CPU's results bit for bit (the
// noise is the counter-based host draw on both); training agrees to rounding.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/cuda.h>

#include <fmt/format.h>

#include <fstream>
#include <numeric>

#include "core/error.h"
#include "core/runtime.h"
#include "core/threads.h"
#include "eval/evaluate.h"
#include "eval/image_source.h"
#include "foreign_device.h"
#include "models/cuda_graph_denoiser.h"
#include "models/network_denoiser.h"
#include "samplers/sampling.h"
#include "teachers/teacher.h"
#include "teacher_training/teacher_training.h"
#include "test_support.h"
#include "trajectories/recorder.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {
namespace {

// Fails the test when an operation mixed the devices after it was made.
class NoMixing {
 public:
  NoMixing() : before_(testing::foreign_device_mixes().count) {}
  ~NoMixing() {
    const auto mixes = testing::foreign_device_mixes();
    EXPECT_EQ(mixes.count, before_) << "an operation mixed the devices (the first in this process: " << mixes.first << ")";
  }

 private:
  int64_t before_;
};

// A tiny class-conditional UNet with attention and random weights, as a teacher file.
std::filesystem::path tiny_unet_teacher(const std::filesystem::path& dir) {
  torch::manual_seed(3);
  NetworkDenoiser net(UNetConfig{.model_channels = 8, .channel_mult = {1, 2}, .blocks_per_level = 1, .attn_resolutions = {14},
                                 .channels_per_head = 8, .dropout = 0, .num_classes = 10});
  net.save(dir / "unet.safetensors");
  return dir / "unet.safetensors";
}

TEST(Device, TheForeignDeviceRefusesOperationsMixingItWithTheCpu) {
  const auto foreign = testing::foreign_device();
  const auto a = torch::ones({3}, torch::TensorOptions().device(foreign));
  EXPECT_THROW(a + torch::ones({3}), c10::Error);
  EXPECT_THROW(a.index_select(0, torch::zeros({1}, torch::kInt64)), c10::Error);
  // Scalars and copies are fine, as on CUDA; results come back intact.
  EXPECT_TRUE(torch::equal((a * torch::full({}, 2.0) + 1).cpu(), torch::full({3}, 3.0)));
  EXPECT_EQ(a.device(), foreign);
}

TEST(Device, UnknownOrAbsentDevicesAreNamed) {
  EXPECT_EQ(resolve_device("cpu"), c10::Device(c10::DeviceType::CPU));
  EXPECT_EQ(resolve_device("auto"), torch::cuda::is_available() ? c10::Device(c10::DeviceType::CUDA, 0) : c10::Device(c10::DeviceType::CPU));
  const auto message = [](const char* name) {
    try {
      resolve_device(name);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message("tpu").find("unknown device 'tpu'"), std::string::npos);
  EXPECT_NE(message("cuda:x").find("unknown device"), std::string::npos);
  EXPECT_NE(message("cuda:64").find("device cuda:64 is not present"), std::string::npos) << message("cuda:64");
}

// --threads, then OMP_NUM_THREADS, then the usable cores shared among torchrun's local ranks.
TEST(CpuThreads, TheFlagThenOmpNumThreadsThenTheCoresDividedAmongLocalProcesses) {
  EXPECT_EQ(choose_cpu_threads(3, "8", 4, 16).threads, 3);
  EXPECT_EQ(choose_cpu_threads(0, "8", 4, 16).threads, 8);
  EXPECT_EQ(choose_cpu_threads(0, "6,2", 1, 16).threads, 6);  // OpenMP's nested list: its first level
  EXPECT_EQ(choose_cpu_threads(0, std::nullopt, 1, 16).threads, 16);
  EXPECT_EQ(choose_cpu_threads(0, std::nullopt, 4, 16).threads, 4);
  EXPECT_EQ(choose_cpu_threads(0, "", 3, 2).threads, 1);  // never zero
  for (const char* bad : {"0", "two", "-1", "4x"}) {
    SCOPED_TRACE(std::string("OMP_NUM_THREADS=") + bad);
    testing::expect_error_mentioning<Error>([&] { choose_cpu_threads(0, bad, 1, 16); }, {"OMP_NUM_THREADS"});
  }
  // Applied to ATen, and through the CLI.
  const int before = at::get_num_threads();
  EXPECT_EQ(use_cpu_threads(1).threads, 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  at::set_num_threads(before);
  const auto dir = testing::scratch_dir();
  const auto sample = " sample --teacher " + testing::shell_quoted("gmm:" + (testing::kSourceDir / "configs/toy/gmm2d.yaml").string()) +
                      " --num 2 --steps 2 --out " + testing::shell_quoted(dir / "s.safetensors");
  const auto flagged = testing::run_command(testing::kCli + " -v --threads 1" + sample);
  EXPECT_EQ(flagged.exit_code, 0) << flagged.output;
  EXPECT_NE(flagged.output.find("CPU threads: 1 (--threads)"), std::string::npos) << flagged.output;
  const auto broken = testing::run_command("OMP_NUM_THREADS=two " + testing::kCli + sample);
  EXPECT_NE(broken.exit_code, 0);
  EXPECT_NE(broken.output.find("environment variable OMP_NUM_THREADS is not a positive number of threads"), std::string::npos) << broken.output;
}

TEST(Device, SamplingAndEvaluatingOnAnotherDeviceGiveTheCpusResults) {
  const NoMixing no_mixing;
  const auto dir = testing::scratch_dir();
  const auto foreign = testing::foreign_device();
  std::ofstream(dir / "mixture.yaml") << testing::kThreeModes2d;
  const auto unet = tiny_unet_teacher(dir);
  struct Case {
    std::string teacher, sampler;
    double guidance;
  };
  for (const auto& c : {Case{"gmm:" + (dir / "mixture.yaml").string(), "dpmpp-2m", 1.0}, Case{unet.string(), "heun", 1.5},
                        Case{unet.string(), "edm-stochastic", 1.0}}) {
    SampleRequest request;
    request.sampler = c.sampler;
    request.steps = 4;
    request.num = 6;
    request.batch = 4;
    request.seed = 9;
    request.guidance = c.guidance;
    request.options.s_churn = c.sampler == "edm-stochastic" ? 10 : 0;
    request.labels = c.guidance != 1.0 || c.sampler == "edm-stochastic" ? "all" : "";
    const auto on_cpu = draw_samples(*load_teacher(c.teacher, torch::kCPU), request);
    const auto there = draw_samples(*load_teacher(c.teacher, foreign), request);
    EXPECT_EQ(there.samples.device(), foreign);
    EXPECT_TRUE(torch::equal(there.samples.cpu(), on_cpu.samples)) << c.teacher << " " << c.sampler;
  }
  // FD features of a sampled model: the model and the classifier on the device.
  SampleRequest request;
  request.steps = 3;
  request.num = 20;
  request.labels = "all";
  const auto classifier = testing::kSourceDir / "assets/eval/fmnist-classifier.safetensors";
  const auto features = [&](const c10::Device& device) {
    auto source = open_image_source("model:" + unet.string(), request, device);
    return evaluate_source(*source, domain_feature_network(classifier, device), true, 8, false);
  };
  const auto cpu = features(torch::kCPU), other = features(foreign);
  EXPECT_TRUE(torch::equal(cpu.features, other.features));
  EXPECT_TRUE(torch::equal(cpu.statistics.mean(), other.statistics.mean()));
}

TEST(Device, RecordingOnAnotherDeviceWritesTheCpusStore) {
  const NoMixing no_mixing;
  const auto dir = testing::scratch_dir();
  const auto unet = tiny_unet_teacher(dir);
  const auto record = [&](const std::string& name, const c10::Device& device) {
    RecordOptions o;
    o.teacher = unet.string();
    o.out = dir / name;
    o.request.num = 10;
    o.request.batch = 4;
    o.request.steps = 3;
    o.request.sampler = "edm-stochastic";
    o.request.options.s_churn = 5;
    o.denoised = true;
    o.shard_size = 6;
    o.show_progress = false;
    o.device = device;
    record_trajectories(o);
    TrajectoryReader reader(o.out, {teacher_fingerprint(o.teacher)});
    std::vector<int64_t> all(10);
    std::iota(all.begin(), all.end(), 0);
    return std::pair{reader.trajectories(all), reader.denoised(all)};
  };
  const auto [cpu_states, cpu_denoised] = record("cpu", torch::kCPU);
  const auto [states, denoised] = record("foreign", testing::foreign_device());
  EXPECT_TRUE(torch::equal(states, cpu_states));
  EXPECT_TRUE(torch::equal(denoised, cpu_denoised));
}

TEST(Device, TeacherTrainingOnAnotherDeviceMatchesTheCpusAndResumesThere) {
  const NoMixing no_mixing;
  const auto dir = testing::scratch_dir();
  const auto run = [&](const std::string& name, int64_t steps, bool resume, const c10::Device& device) {
    TrainingRunOptions o;
    o.config_file = testing::kSourceDir / "configs/teacher/fmnist.yaml";
    o.out_dir = dir / name;
    o.resume = resume;
    o.show_progress = false;
    o.runtime.device = device;
    o.overrides = {"model.model_channels=8", "model.channel_mult=[1, 2]", "model.blocks_per_level=1", "model.attn_resolutions=[14]",
                   "model.channels_per_head=8", "model.num_classes=10", "data.hflip=true", "train.batch=4", "train.warmup_steps=2",
                   "train.steps=" + std::to_string(steps), "train.ema_halflife_images=20", "log.every=1", "checkpoint.every=2", "grid.every=0",
                   "grid.num=4"};
    train_teacher(o);
  };
  run("cpu", 4, false, torch::kCPU);
  run("foreign", 2, false, testing::foreign_device());
  run("foreign", 4, true, testing::foreign_device());  // the optimiser's moments are restored onto the device
  for (const char* file : {"teacher.safetensors", "checkpoints/step-0000004/model_optimizer.safetensors"})
    EXPECT_LT(testing::max_tensor_file_difference(dir / "cpu" / file, dir / "foreign" / file), 1e-4) << file;
}

// Off CUDA the graph wrapper is the network itself: the same results, nothing captured.
TEST(CudaGraph, OffCudaTheWrapperEvaluatesTheNetworkItself) {
  const auto dir = testing::scratch_dir();
  auto net = NetworkDenoiser::load(tiny_unet_teacher(dir));
  CudaGraphDenoiser graphed(*net);
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({3, 1, 28, 28});
  const auto sigma = torch::tensor({0.5f, 2.0f, 10.0f});
  const auto labels = torch::tensor({1, 4, -1}, torch::kInt64);
  EXPECT_TRUE(torch::equal(graphed.denoise(x, sigma, labels), net->denoise(x, sigma, labels)));
  EXPECT_EQ(graphed.graphs(), 0);
  EXPECT_EQ(graphed.replays(), 0);
}

// On a GPU: one capture per batch shape, replays equal to eager evaluation, and whole sampling
// runs (the teacher's Heun steps and a one-step student) unchanged.
TEST(CudaGraph, ReplaysGiveTheEagerResultsWithOneCapturePerShape) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here: tools/gpu_check.sh runs this on the GPU machine";
  const auto dir = testing::scratch_dir();
  auto net = NetworkDenoiser::load(tiny_unet_teacher(dir));
  const c10::Device cuda(c10::DeviceType::CUDA, 0);
  net->to(cuda);
  CudaGraphDenoiser graphed(*net);
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().device(cuda);
  for (int call = 0; call < 3; ++call) {
    const auto x = torch::randn({4, 1, 28, 28}, options);
    const auto sigma = torch::rand({4}, options) * 10 + 0.01;
    const auto labels = torch::randint(-1, 10, {4}, options.dtype(torch::kInt64));
    EXPECT_LT((graphed.denoise(x, sigma, labels) - net->denoise(x, sigma, labels)).abs().max().item<double>(), 1e-5) << "call " << call;
  }
  EXPECT_EQ(graphed.graphs(), 1);
  EXPECT_EQ(graphed.replays(), 3);
  graphed.denoise(torch::randn({2, 1, 28, 28}, options), torch::ones({2}, options), torch::zeros({2}, options.dtype(torch::kInt64)));
  EXPECT_EQ(graphed.graphs(), 2) << "another batch size, another graph";

  SampleRequest request;
  request.sampler = "heun";
  request.steps = 6;
  request.num = 10;
  request.batch = 4;
  request.labels = "all";
  const auto eager = draw_samples(*net, request), replayed = draw_samples(graphed, request);
  EXPECT_TRUE(torch::equal(eager.noise, replayed.noise));
  EXPECT_LT((eager.samples - replayed.samples).abs().max().item<double>(), 1e-4);
}

}  // namespace
}  // namespace distillery
