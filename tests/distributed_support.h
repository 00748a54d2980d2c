// defines: torchrun, stats_lines, relative_difference, kSameTraining, expect_same_logs
// Launching the CLI as several processes under torchrun, and reading and comparing what runs wrote.
#pragma once

#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "test_support.h"

namespace distillery::testing {

// `distillery <arguments>` as `processes` processes under torchrun (c10d's Gloo between them).
CommandResult torchrun(int processes, const std::string& arguments);

// A run's stats.jsonl, one object per line.
std::vector<nlohmann::json> stats_lines(const std::filesystem::path& run);

// ‖a − b‖ / ‖b‖ over every tensor of two weight files; a tensor one of them lacks fails the test.
double relative_difference(const std::filesystem::path& a, const std::filesystem::path& b);

// Gradients averaged over two processes round differently from one mean over both halves, and
// Adam carries the rounding into the weights. Measured after 4 teacher steps: 1.6e-6 between
// one and two processes, and 2.7e-6 between two single-process runs that differ only in their
// thread count (1 or 2), the rounding any change of summation order brings. A rank training on
// the wrong rows, or gradients not averaged, differs by orders of magnitude more.
constexpr double kSameTraining = 1e-5;

// The two runs' stats.jsonl log the same steps and images, and `keys` within `tolerance` (relative above 1).
void expect_same_logs(const std::filesystem::path& one, const std::filesystem::path& two, const std::vector<std::string>& keys,
                      double tolerance = kSameTraining);

}  // namespace distillery::testing
