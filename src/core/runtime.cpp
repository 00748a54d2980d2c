#include "core/runtime.h"

#include <fmt/format.h>
#include <torch/cuda.h>

#include <charconv>
#include <cstdlib>

#include "core/error.h"
#include "core/process_group.h"

namespace distillery {

namespace {

std::string cuda_inventory() {
  const auto count = torch::cuda::device_count();
  return count == 0 ? "no CUDA device on this machine" : fmt::format("{} CUDA device(s): cuda:0..cuda:{}", count, count - 1);
}

}  // namespace

int64_t environment_count(const char* name, int64_t fallback) {
  const char* text = std::getenv(name);
  if (!text || !*text) return fallback;
  int64_t value = -1;
  const std::string_view view(text);
  const auto [end, error] = std::from_chars(view.data(), view.data() + view.size(), value);
  DISTILLERY_CHECK(error == std::errc() && end == view.data() + view.size() && value >= 0,
                   Error(fmt::format("environment variable {} is not a non-negative integer", name)).got(text));
  return value;
}

std::string device_names_help() { return "auto (CUDA when present, else the CPU), cpu, cuda, cuda:N"; }

c10::Device resolve_device(std::string_view name, int64_t local_rank) {
  const auto invalid = [&] { return Error(fmt::format("unknown device '{}'", name)).field("--device").expected(device_names_help()); };
  const auto cuda_count = static_cast<int64_t>(torch::cuda::device_count());
  if (name == "auto") return cuda_count > 0 ? c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(local_rank % cuda_count)) : c10::Device(c10::DeviceType::CPU);
  if (name == "cpu") return c10::Device(c10::DeviceType::CPU);
  if (!name.starts_with("cuda")) throw invalid();
  int64_t index = local_rank;
  if (name != "cuda") {
    const auto digits = name.substr(5);
    DISTILLERY_CHECK(name[4] == ':' && !digits.empty(), invalid());
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    DISTILLERY_CHECK(error == std::errc() && end == digits.data() + digits.size() && index >= 0, invalid());
  }
  DISTILLERY_CHECK(index < cuda_count, Error(fmt::format("device {} is not present", name == "cuda" ? fmt::format("cuda:{}", index) : std::string(name)))
                                           .field("--device").got(cuda_inventory()).hint("use --device cpu, or auto to take a GPU only when there is one"));
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
}

const ProcessGroup& Runtime::processes() const {
  static const ProcessGroup single;
  return group ? *group : single;
}

Runtime make_runtime(std::string_view device_name, Launch launch) {
  Runtime runtime;
  runtime.world_size = std::max<int64_t>(environment_count("WORLD_SIZE", 1), 1);
  runtime.rank = environment_count("RANK", 0);
  runtime.local_rank = environment_count("LOCAL_RANK", 0);
  DISTILLERY_CHECK(runtime.world_size == 1 || launch == Launch::multi_process,
                   Error(fmt::format("launched as {} processes (WORLD_SIZE={}), and this command runs as one", runtime.world_size, runtime.world_size))
                       .hint("run it as one process; `distill`, `teacher train` and `record` run under torchrun, and every result depends only on (seed, sample "
                             "index), not on the number of processes"));
  runtime.device = resolve_device(device_name, runtime.local_rank);
  runtime.group = connect_process_group(runtime.rank, runtime.world_size, runtime.device);
  return runtime;
}

}  // namespace distillery
