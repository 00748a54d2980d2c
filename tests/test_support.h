// defines: CommandResult, run_command, scratch_dir, python_available, shell_quoted, last_line, file_bytes, expect_error_mentioning,
//          kPython, kSourceDir, kCli, kBuild*, kThreeModes2d
// Helpers shared by the test files: running the CLI and the Python reference scripts, a fresh
// scratch directory per test, a file's bytes, and an error's message.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <source_location>
#include <string>
#include <vector>

namespace distillery::testing {

// The build's absolute paths, defined in test_paths.cpp alone: the other test files then compile
// alike in every checkout and a fresh clone finds them in the compiler cache. Constant-initialised
// pointers, so the constants below (and file-scope constants built from them) see them set.
extern const char* const kBuildPython;
extern const char* const kBuildSourceDir;
extern const char* const kBuildCli;

inline const std::string kPython = kBuildPython;
inline const std::filesystem::path kSourceDir = kBuildSourceDir;
inline const std::string kCli = kBuildCli;

// The tests' standard 2-D mixture: three unequal, well-separated modes.
inline const char* const kThreeModes2d = R"(
dim: 2
weights: [0.5, 0.3, 0.2]
means: [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]]
stds: [0.3, 0.5, 0.2]
)";

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result{-1, ""};
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline std::string shell_quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

// The last non-empty line of a command's output: where the Python references print their JSON
// (libraries may print before it).
inline std::string last_line(std::string output) {
  while (!output.empty() && output.back() == '\n') output.pop_back();
  const auto line_start = output.rfind('\n');
  return line_start == std::string::npos ? output : output.substr(line_start + 1);
}

// <tmp>/distillery-tests/<suite>.<test> of the running test, as it is.
inline std::filesystem::path scratch_path() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::filesystem::temp_directory_path() / "distillery-tests" / (std::string(info->test_suite_name()) + "." + info->name());
}

// scratch_path(), emptied at the start of each test.
inline std::filesystem::path scratch_dir() {
  auto dir = scratch_path();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline bool python_available() { return std::filesystem::exists(kPython); }

// The whole file, for bit-for-bit comparisons.
inline std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// `call` must throw an `Expected` with every phrase in its message; any other exception escapes
// and fails the test, so a wrong error cannot pass for the right one. A failure names the
// caller's line, not this one.
template <class Expected = std::exception>
void expect_error_mentioning(const std::function<void()>& call, const std::vector<std::string>& phrases,
                             const std::source_location caller = std::source_location::current()) {
  const ::testing::ScopedTrace trace(caller.file_name(), static_cast<int>(caller.line()), "the expected error");
  try {
    call();
    ADD_FAILURE() << "no error";
  } catch (const Expected& e) {
    for (const auto& phrase : phrases) EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
  }
}

}  // namespace distillery::testing
