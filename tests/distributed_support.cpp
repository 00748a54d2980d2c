#include "distributed_support.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/tensor_file.h"

namespace distillery::testing {

// Two processes on a 2-core machine: one thread each (CTest's OMP_NUM_THREADS=1) keeps them
// from slowing each other several times over. torchrun's own logs go to the test's scratch
// folder: left to itself it makes a new /tmp/torchelastic_* folder per launch and never removes it.
CommandResult torchrun(int processes, const std::string& arguments) {
  return run_command(fmt::format("{} -m torch.distributed.run --standalone --nproc_per_node={} --log-dir {} --no-python -- {} {}", kPython, processes,
                                 (scratch_path() / "torchrun-logs").string(), kCli, arguments));
}

double relative_difference(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto first = load_tensor_file(a), second = load_tensor_file(b);
  EXPECT_EQ(first.tensors.size(), second.tensors.size()) << a << " and " << b << " hold different tensors";
  double difference = 0, size = 0;
  for (const auto& [name, tensor] : second.tensors) {
    const auto other = first.tensors.find(name);
    if (other == first.tensors.end()) {
      ADD_FAILURE() << a << " lacks " << name;
      return INFINITY;
    }
    difference += (other->second.to(torch::kFloat64) - tensor.to(torch::kFloat64)).square().sum().item<double>();
    size += tensor.to(torch::kFloat64).square().sum().item<double>();
  }
  return std::sqrt(difference / std::max(size, 1e-300));
}

std::vector<nlohmann::json> stats_lines(const std::filesystem::path& run) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run / "stats.jsonl");
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

void expect_same_logs(const std::filesystem::path& one, const std::filesystem::path& two, const std::vector<std::string>& keys, double tolerance) {
  const auto a = stats_lines(one), b = stats_lines(two);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].at("step"), b[i].at("step"));
    EXPECT_EQ(a[i].value("images", -1), b[i].value("images", -1)) << "line " << i;
    for (const auto& key : keys) {
      ASSERT_EQ(a[i].contains(key), b[i].contains(key)) << key << " line " << i;
      if (!a[i].contains(key)) continue;
      const double x = a[i].at(key), y = b[i].at(key);
      EXPECT_NEAR(x, y, tolerance * std::max(1.0, std::abs(x))) << key << " line " << i;
    }
  }
}

}  // namespace distillery::testing
