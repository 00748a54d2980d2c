#include "core/threads.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "core/error.h"
#include "core/runtime.h"

namespace distillery {

namespace {

// The cores the scheduler lets this process use (taskset and cgroup cpusets narrow them).
int64_t usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

CpuThreads choose_cpu_threads(int64_t requested, const std::optional<std::string>& omp_num_threads, int64_t local_world_size, int64_t cores) {
  if (requested > 0) return {requested, "--threads"};
  if (omp_num_threads && !omp_num_threads->empty()) {
    const std::string_view first = std::string_view(*omp_num_threads).substr(0, omp_num_threads->find(','));
    int64_t value = 0;
    const auto [end, error] = std::from_chars(first.data(), first.data() + first.size(), value);
    DISTILLERY_CHECK(error == std::errc() && end == first.data() + first.size() && value > 0,
                     Error("environment variable OMP_NUM_THREADS is not a positive number of threads").got(*omp_num_threads)
                         .hint("unset it, or give distillery --threads N"));
    return {value, "OMP_NUM_THREADS"};
  }
  const int64_t processes = std::max<int64_t>(local_world_size, 1);
  if (processes == 1) return {std::max<int64_t>(cores, 1), fmt::format("the {} usable cores", cores)};
  return {std::max<int64_t>(cores / processes, 1), fmt::format("{} usable cores shared by {} processes (LOCAL_WORLD_SIZE)", cores, processes)};
}

CpuThreads use_cpu_threads(int64_t requested) {
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const auto choice = choose_cpu_threads(requested, omp ? std::optional<std::string>(omp) : std::nullopt, environment_count("LOCAL_WORLD_SIZE", 1),
                                         usable_cores());
  at::set_num_threads(static_cast<int>(choice.threads));
  spdlog::debug("CPU threads: {} ({})", choice.threads, choice.reason);
  return choice;
}

}  // namespace distillery
