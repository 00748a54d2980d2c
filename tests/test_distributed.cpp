// Data-parallel training across processes, launched as users launch it (torchrun, c10d's Gloo
// between CPU processes): N processes with batch B train as one process with batch N·B, a run
// resumes whatever the number of processes it stopped with, and a process that dies ends the
// others with an error instead of a hang.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <torch/types.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "distributed_support.h"
#include "teachers/teacher.h"
#include "test_support.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {
namespace {

testing::CommandResult one_process(const std::string& arguments) { return testing::run_command(fmt::format("{} {}", testing::kCli, arguments)); }

using testing::stats_lines;

std::string teacher_arguments(const std::filesystem::path& out, int64_t batch, int64_t steps) {
  // Dropout, label dropout and flips on: each is drawn by sample position.
  return fmt::format(
      "teacher train --config {} --out {} --set model.model_channels=8 --set 'model.channel_mult=[1, 2]' --set model.blocks_per_level=1 "
      "--set 'model.attn_resolutions=[14]' --set model.channels_per_head=8 --set model.dropout=0.2 --set model.label_dropout=0.3 --set data.hflip=true "
      "--set train.batch={} "
      "--set train.warmup_steps=2 --set train.steps={} --set train.ema_halflife_images=20 --set log.every=1 --set checkpoint.every=2 --set grid.every=0 "
      "--set grid.num=4",
      testing::shell_quoted(testing::kSourceDir / "configs/teacher/fmnist.yaml"), testing::shell_quoted(out), batch, steps);
}

TEST(Distributed, TeacherTrainingInTwoProcessesEqualsOneProcessWithTheDoubledBatch) {
  if (!testing::python_available()) GTEST_SKIP() << "no Python environment with torch (torchrun launches the processes)";
  const auto dir = testing::scratch_dir();
  auto result = one_process(teacher_arguments(dir / "one", 8, 4));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = testing::torchrun(2, teacher_arguments(dir / "two", 4, 4));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  for (const char* file : {"teacher.safetensors", "checkpoints/step-0000004/model.safetensors", "checkpoints/step-0000004/model_optimizer.safetensors"}) {
    const double difference = testing::relative_difference(dir / "one" / file, dir / "two" / file);
    std::printf("%s: relative difference %.3g\n", file, difference);
    EXPECT_LT(difference, testing::kSameTraining) << file;
  }
  testing::expect_same_logs(dir / "one", dir / "two", {"loss"});
  // Only rank 0 writes: one log, one checkpoint directory per step.
  EXPECT_EQ(stats_lines(dir / "two").size(), 4u);
}

// A one-step DMD2 student of the 2-D mixture (generator, critic, both optimisers, the output
// EMA and the in-loop evaluation), through the CLI.
std::string dmd2_arguments(const std::filesystem::path& dir, const std::string& name, int64_t batch, int64_t steps, bool resume) {
  const auto recipe = dir / "dmd2.yaml";
  if (!std::filesystem::exists(recipe)) {
    std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
    std::ofstream(recipe) << fmt::format(R"(
method: dmd2
student: {{init: scratch}}
model: {{kind: mlp, shape: [2], hidden: 32, layers: 2, num_classes: 0}}
precond: {{sigma_data: 1.5}}
dmd2: {{generator_lr: 1.0e-3, critic_lr: 1.0e-3, critic_steps: 2}}
train: {{ema_halflife_images: 100}}
eval: {{every: 3, num: 200, reference: "gmm:{}", features: raw}}
grid: {{every: 0, num: 100}}
log: {{every: 1}}
checkpoint: {{every: 3}}
)",
                                         (dir / "three_modes.yaml").string());
  }
  return fmt::format("distill --config {} --teacher gmm:{} --out {} --set train.batch={} --set train.steps={}{}", testing::shell_quoted(recipe),
                     testing::shell_quoted(dir / "three_modes.yaml"), testing::shell_quoted(dir / name), batch, steps, resume ? " --resume" : "");
}

TEST(Distributed, Dmd2InTwoProcessesEqualsOneProcessAndResumesAcrossProcessCounts) {
  if (!testing::python_available()) GTEST_SKIP() << "no Python environment with torch (torchrun launches the processes)";
  const auto dir = testing::scratch_dir();
  const auto expect_ok = [](const testing::CommandResult& result) { ASSERT_EQ(result.exit_code, 0) << result.output; };
  expect_ok(one_process(dmd2_arguments(dir, "one", 64, 6, false)));
  expect_ok(testing::torchrun(2, dmd2_arguments(dir, "two", 32, 6, false)));
  // Stopped after 3 steps and resumed, by two processes; and started by one, resumed by two.
  expect_ok(testing::torchrun(2, dmd2_arguments(dir, "two-resumed", 32, 3, false)));
  expect_ok(testing::torchrun(2, dmd2_arguments(dir, "two-resumed", 32, 6, true)));
  expect_ok(one_process(dmd2_arguments(dir, "one-then-two", 64, 3, false)));
  expect_ok(testing::torchrun(2, dmd2_arguments(dir, "one-then-two", 32, 6, true)));

  const std::vector<std::string> files = {"student.safetensors", "checkpoints/step-0000006/generator.safetensors",
                                          "checkpoints/step-0000006/critic.safetensors", "checkpoints/step-0000006/critic_optimizer.safetensors",
                                          "checkpoints/step-0000006/generator_optimizer.safetensors"};
  for (const char* run : {"two", "two-resumed", "one-then-two"})
    for (const auto& file : files) {
      const double difference = testing::relative_difference(dir / "one" / file, dir / run / file);
      std::printf("%s/%s: relative difference %.3g\n", run, file.c_str(), difference);
      EXPECT_LT(difference, testing::kSameTraining) << run << "/" << file;
    }
  // With the same number of processes a resumed run is the uninterrupted one, bit for bit.
  for (const auto& file : files) EXPECT_EQ(testing::relative_difference(dir / "two" / file, dir / "two-resumed" / file), 0) << file;
  for (const char* run : {"two", "two-resumed", "one-then-two"}) testing::expect_same_logs(dir / "one", dir / run, {"dm_loss", "critic_loss", "fd_raw"});
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  const bool bound = fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                     getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  if (fd >= 0) close(fd);
  return bound ? ntohs(address.sin_port) : -1;
}

TEST(Distributed, AProcessThatDiesEndsTheOthersWithAnErrorInsteadOfAHang) {
  const auto dir = testing::scratch_dir();
  const int port = free_port();
  ASSERT_GT(port, 0);
  // Launched by hand (as torchrun would set them up), so that nothing but the survivor itself
  // notices the death; `timeout` turns a hang into exit 124.
  const auto training = dmd2_arguments(dir, "run", 32, 1000000, false);
  const auto script = fmt::format(
      "cd {dir} && export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={port}; "
      "RANK=0 LOCAL_RANK=0 timeout 120 {cli} {training} > rank0.log 2>&1 & survivor=$!; "
      "RANK=1 LOCAL_RANK=1 {cli} {training} > rank1.log 2>&1 & victim=$!; "
      "for i in $(seq 1200); do [ $(cat run/stats.jsonl 2>/dev/null | wc -l) -ge 3 ] && break; sleep 0.1; done; "
      "kill -9 $victim; wait $survivor; echo \"survivor exit $?\"; cat rank0.log",
      fmt::arg("dir", testing::shell_quoted(dir)), fmt::arg("port", port), fmt::arg("cli", testing::kCli), fmt::arg("training", training));
  const auto result = testing::run_command(script);
  EXPECT_NE(result.output.find("survivor exit 1"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("process 0 of 2: exchanging"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("another process of the launch has stopped"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("frame #"), std::string::npos) << "a C++ stack trace reached the user:\n" << result.output;
}

TEST(Distributed, RecordUnderTorchrunGivesEachProcessAPartAndTheStoreOfOneProcess) {
  if (!testing::python_available()) GTEST_SKIP() << "no Python environment with torch (torchrun launches the processes)";
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  const auto record = [&](const std::string& name) {
    return fmt::format("record --teacher gmm:{} --sampler heun --steps 6 --num 100 --shard-size 16 --store full --out {}",
                       testing::shell_quoted(dir / "three_modes.yaml"), testing::shell_quoted(dir / name));
  };
  auto result = one_process(record("one"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = testing::torchrun(2, record("two"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("all 2 parts recorded"), std::string::npos) << result.output;
  // Both parts' locks: each process recorded its own shards.
  EXPECT_TRUE(std::filesystem::exists(dir / "two/.lock-part-0-of-2"));
  EXPECT_TRUE(std::filesystem::exists(dir / "two/.lock-part-1-of-2"));
  const auto teacher = "gmm:" + (dir / "three_modes.yaml").string();
  TrajectoryReader one(dir / "one", {teacher_fingerprint(teacher)}), two(dir / "two", {teacher_fingerprint(teacher)});
  std::vector<int64_t> all(100);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_TRUE(torch::equal(one.trajectories(all), two.trajectories(all)));
  result = testing::torchrun(2, record("three") + " --part 0/2");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--part and a launch of several processes both divide the shards"), std::string::npos) << result.output;
}

TEST(Distributed, CommandsThatRunAsOneProcessRefuseALaunchOfSeveral) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  const auto result = testing::run_command(fmt::format("WORLD_SIZE=2 RANK=0 {} sample --teacher gmm:{} --num 4 --out {}", testing::kCli,
                                                       testing::shell_quoted(dir / "three_modes.yaml"), testing::shell_quoted(dir / "s.safetensors")));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("launched as 2 processes (WORLD_SIZE=2), and this command runs as one"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "s.safetensors"));
}

TEST(Distributed, ALaunchWithoutARendezvousAddressIsRefusedByName) {
  const auto dir = testing::scratch_dir();
  const auto result = testing::run_command(fmt::format("env -u MASTER_ADDR -u MASTER_PORT WORLD_SIZE=2 RANK=1 {} {}", testing::kCli,
                                                       dmd2_arguments(dir, "run", 32, 2, false)));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("needs MASTER_ADDR and MASTER_PORT"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace distillery
