// The `distillery` command: parses the command line, runs one subcommand, and turns every
// distillery::Error into a readable message and a non-zero exit code (never a stack trace).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/threads.h"
#include "kernels/attention.h"

namespace {
constexpr int kExitFailure = 1;

void setup_logging() {
  auto logger = spdlog::stderr_color_mt("distillery");
  logger->set_pattern("[%H:%M:%S] %^%l%$ %v");
  spdlog::set_default_logger(logger);
}
}  // namespace

int main(int argc, char** argv) {
  distillery::keep_freed_memory();
  setup_logging();
  CLI::App app{"distillery: distil diffusion models into one- and few-step generators"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "debug logging; errors also show where in the sources they were raised")
      ->each([](const std::string&) { spdlog::set_level(spdlog::level::debug); });
  app.add_option_function<std::string>(
         "--attention", [](const std::string& name) { distillery::set_attention_backend(distillery::attention_backend_from_name(name)); },
         "attention implementation: auto (the fused CUDA kernel on GPUs, else SDPA), fused or sdpa (to compare them)")
      ->check(CLI::IsMember(distillery::attention_backend_names()));
  app.add_option_function<int64_t>(
         "--threads", [](int64_t threads) { distillery::use_cpu_threads(threads); },
         "CPU threads of this process (default: OMP_NUM_THREADS, else the usable cores divided among torchrun's local processes)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  distillery::add_sample_command(app);
  distillery::add_teacher_command(app);
  distillery::add_record_command(app);
  distillery::add_inspect_command(app);
  distillery::add_eval_command(app);
  distillery::add_distill_command(app);
  distillery::add_plot_command(app);

  // Subcommand actions run inside parse(), once the whole command line has been checked; a
  // --threads given there replaces the default chosen here.
  try {
    distillery::use_cpu_threads(0);
    app.parse(argc, argv);
    return 0;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const distillery::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.describe(verbose).c_str());
  } catch (const std::filesystem::filesystem_error& e) {
    // Said in the project's words: the library's text ("filesystem error: cannot create
    // directories: Not a directory [a/b]") leads with its own function, not the path.
    auto error = distillery::Error("cannot use the path").file(e.path1().string()).got(e.code().message());
    if (!e.path2().empty()) error.hint("with " + e.path2().string());
    std::fprintf(stderr, "error: %s\n", error.describe(verbose).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return kExitFailure;
}
