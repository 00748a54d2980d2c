// Core utilities: error formatting, progress formatting, atomic files, label policies, hashes.
#include <gtest/gtest.h>

#include <torch/types.h>

#include <cstdio>
#include <thread>
#include <fstream>
#include <sstream>

#include "core/allocation_budget.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/memory_check.h"
#include "core/progress.h"
#include "data/label_policy.h"
#include "io/atomic_file.h"
#include "test_support.h"

namespace distillery {
namespace {

TEST(Error, DescribesEveryPartGiven) {
  const auto e = Error("tensor has the wrong shape").file("w.safetensors").field("conv.weight").expected("[3, 3]").got("[3, 4]").hint("re-export");
  EXPECT_STREQ(e.what(),
               "tensor has the wrong shape\n  file: w.safetensors\n  field: conv.weight\n  expected: [3, 3]\n  got: [3, 4]\n  hint: re-export");
  EXPECT_EQ(Error("plain").describe(), "plain");
  EXPECT_NE(Error("x").describe(true).find("test_core.cpp"), std::string::npos);
}

TEST(Error, CheckMacroThrowsOnlyOnFailure) {
  EXPECT_NO_THROW(DISTILLERY_CHECK(1 + 1 == 2, "never"));
  EXPECT_THROW(DISTILLERY_CHECK(1 + 1 == 3, Error("arithmetic").field("x")), Error);
}

// The budget counts what this thread allocates while it is in scope: other threads are not
// charged, and the refusal comes before the allocation.
TEST(AllocationBudget, RefusesTheFirstAllocationPastTheLimitAndCountsOnlyItsThread) {
  const auto refusal = [](size_t bytes) { return Error("over budget").got(std::to_string(bytes)); };
  {
    const AllocationBudget budget(4000, refusal);
    auto kept = torch::empty({500}, torch::kFloat32);  // 2000 bytes
    torch::empty({250}, torch::kFloat32);              // 1000 more, freed at once but counted
    std::thread([] { EXPECT_NO_THROW(torch::empty({1 << 20}, torch::kFloat32)); }).join();
    try {
      auto too_much = torch::empty({300}, torch::kFloat32);
      ADD_FAILURE() << "3000 + 1200 bytes exceed a budget of 4000";
    } catch (const Error& e) {
      EXPECT_EQ(e.message(), "over budget");
      EXPECT_NE(std::string(e.what()).find("got: 4200"), std::string::npos) << e.what();
    }
  }
  // Out of scope, nothing is counted.
  EXPECT_EQ(torch::empty({1 << 20}, torch::kFloat32).numel(), 1 << 20);
}

// The memory a piece of work takes is what it holds at its peak: 64 MiB written and kept, and
// 64 MiB more made and freed while the first is held, take 128 MiB, not 192.
TEST(MemoryCheck, WorkingBytesIsThePeakTheWorkAddsOnTheCpu) {
  const c10::Device cpu(c10::DeviceType::CPU);
  at::Tensor kept;
  const auto taken = working_bytes(cpu, [&] {
    kept = torch::ones({16 << 20}, torch::kFloat32);
    for (int i = 0; i < 2; ++i) torch::ones({16 << 20}, torch::kFloat32);
  });
  EXPECT_GE(taken, 120u << 20);
  EXPECT_LE(taken, 160u << 20);
  EXPECT_GT(available_memory(cpu), 0u);
}

// Allocations are counted whether or not they are freed, and whatever the allocator had cached:
// the same work measures the same twice.
TEST(MemoryCheck, AllocatedBytesCountsEveryAllocationFreedOrNot) {
  const c10::Device cpu(c10::DeviceType::CPU);
  const auto work = [] {
    const auto kept = torch::ones({16 << 20}, torch::kFloat32);
    for (int i = 0; i < 2; ++i) torch::ones({16 << 20}, torch::kFloat32);
  };
  const auto first = allocated_bytes(cpu, work);
  EXPECT_GE(first, 192u << 20);
  EXPECT_LE(first, 193u << 20);
  EXPECT_EQ(allocated_bytes(cpu, work), first);
}

TEST(MemoryCheck, ARefusalNamesEveryPartTheSumAndTheOverride) {
  const c10::Device cpu(c10::DeviceType::CPU);
  const std::vector<MemoryPart> parts = {{"the results", 3.0 * (1ull << 50)}, {"the batch", 1 << 20}};
  try {
    require_memory(parts, cpu, true, "--num or --batch");
    ADD_FAILURE() << "3 PiB cannot be free";
  } catch (const Error& e) {
    const std::string text = e.what();
    EXPECT_EQ(e.message(), "this would need about 3072.0 TiB of memory on cpu, more than is free");
    EXPECT_NE(text.find("\n    3072.0 TiB for the results\n    1.0 MiB for the batch"), std::string::npos) << text;
    EXPECT_NE(text.find("hint: lower --num or --batch, or give --no-memory-check to run anyway"), std::string::npos) << text;
  }
  EXPECT_NO_THROW(require_memory(parts, cpu, false, "--num or --batch"));
  EXPECT_NO_THROW(require_memory({{"a little", 1 << 20}}, cpu, true, "--num or --batch"));
  EXPECT_EQ(human_bytes(1536), "1.5 KiB");
  EXPECT_EQ(human_bytes(3.0 * (1 << 30)), "3.00 GiB");
}

TEST(Progress, FormatsRatesAndDurations) {
  EXPECT_EQ(Progress::format_duration(0), "00:00");
  EXPECT_EQ(Progress::format_duration(75), "01:15");
  EXPECT_EQ(Progress::format_duration(3 * 3600 + 62), "3:01:02");
  EXPECT_EQ(Progress::format_duration(-1), "--:--");
  EXPECT_EQ(Progress::format_rate(12.34, "img"), "12.3 img/s");
  EXPECT_EQ(Progress::format_rate(0.25, "step"), "4.00 s/step");
  EXPECT_EQ(Progress::format_rate(0, "img"), "-- img/s");
}

TEST(Progress, NonTerminalOutputIsPlainLines) {
  const auto dir = testing::scratch_dir();
  const auto path = dir / "log.txt";
  FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  {
    Progress progress("sample", 10, "img", file);
    progress.advance(10);
  }
  std::fclose(file);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str().find('\r'), std::string::npos) << "no carriage returns in logs";
  EXPECT_NE(text.str().find("sample: 10/10 100%"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("img/s in"), std::string::npos) << text.str();
}

TEST(Progress, ResumedWorkCountsTowardTheTotalNotTheRate) {
  const auto dir = testing::scratch_dir();
  FILE* file = std::fopen((dir / "log.txt").c_str(), "w");
  ASSERT_NE(file, nullptr);
  { Progress progress("train", 100, "step", file, 90); }
  std::fclose(file);
  std::ifstream in(dir / "log.txt");
  std::string line;
  std::getline(in, line);
  EXPECT_NE(line.find("train: 90/100 90%"), std::string::npos) << line;
  EXPECT_NE(line.find("-- step/s"), std::string::npos) << "nothing was done in this process: " << line;
}

TEST(AtomicFile, WritesReplacesAndLeavesNoTemporaries) {
  const auto dir = testing::scratch_dir();
  write_file_atomic(dir / "a.txt", "first");
  write_file_atomic(dir / "a.txt", "second");
  std::ifstream in(dir / "a.txt");
  std::string content;
  in >> content;
  EXPECT_EQ(content, "second");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 1);
  EXPECT_EQ(temporary_sibling(dir / "a.txt").parent_path(), dir);
}

TEST(AtomicFile, UnwritableDirectoryNamesThePath) {
  try {
    write_file_atomic("/nonexistent-dir/a.txt", "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.file().find("/nonexistent-dir/"), std::string::npos);
  }
}

TEST(LabelPolicy, AllSingleAndList) {
  EXPECT_EQ(labels_for("all", 3, {0, 1, 2, 3, 4}), (std::vector<int64_t>{0, 1, 2, 0, 1}));
  EXPECT_EQ(labels_for("", 3, {5}), (std::vector<int64_t>{2}));
  EXPECT_EQ(labels_for("2", 3, {0, 1}), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(labels_for("0,2,5", 10, {0, 1, 2, 3}), (std::vector<int64_t>{0, 2, 5, 0}));
  EXPECT_EQ(labels_for("none", 3, {0, 4}), (std::vector<int64_t>{-1, -1}));
  EXPECT_TRUE(labels_for("", 0, {0, 1}).empty());
}

TEST(LabelPolicy, ErrorsNameTheBadLabel) {
  for (const std::string bad : {"10", "-1", "a", "1,,2", "3x"}) {
    try {
      labels_for(bad, 10, {0});
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.field(), "--labels");
      EXPECT_NE(std::string(e.what()).find("0..9"), std::string::npos);
    }
  }
  EXPECT_THROW(labels_for("3", 0, {0}), Error);
}

TEST(Hash, Fnv1aKnownValues) {
  EXPECT_EQ(fnv1a64_hex(""), "cbf29ce484222325");
  EXPECT_EQ(fnv1a64_hex("a"), "af63dc4c8601ec8c");
  EXPECT_EQ(fnv1a64_hex("foobar"), "85944171f73967e8");
}

}  // namespace
}  // namespace distillery

namespace distillery {
namespace {

// libtorch.so exports its own std::filesystem; if it bound first, this call would crash
// (see the link options in CMakeLists.txt).
TEST(Toolchain, StdFilesystemBindsToTheSystemLibrary) {
  const auto dir = testing::scratch_dir() / "nested";
  std::filesystem::create_directories(dir / "a" / "b");
  std::ofstream(dir / "a" / "b" / "file.txt") << "x";
  EXPECT_EQ(std::filesystem::remove_all(dir), 4u);
}

}  // namespace
}  // namespace distillery
