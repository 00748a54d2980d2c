// defines: Runtime, Launch, environment_count, device_names_help, resolve_device, make_runtime
// The one runtime context, built once by the CLI and passed down: the device every network,
// teacher, data batch and method tensor lives on, the process's place in a torchrun launch
// (RANK, WORLD_SIZE, LOCAL_RANK) and the process group it exchanges through. Noise never
// depends on it: it is drawn on the host by the counter-based RNG and copied to the device
// (core/rng.h).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace distillery {

class ProcessGroup;

struct Runtime {
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::shared_ptr<const ProcessGroup> group;  // null: one process

  // The group, or one of a single process.
  const ProcessGroup& processes() const;
};

// Whether a command works across the processes of a launch (training does) or must run as one.
enum class Launch { single_process, multi_process };

// An environment variable holding a non-negative integer (torchrun's RANK, LOCAL_WORLD_SIZE, ...),
// or `fallback` when unset; anything else is an Error naming it.
int64_t environment_count(const char* name, int64_t fallback);

std::string device_names_help();  // "auto, cpu, cuda, cuda:N", for help text

// auto (CUDA when one is present, else the CPU), cpu, cuda, cuda:N. A CUDA device that is
// absent is an error naming it and what this machine has.
c10::Device resolve_device(std::string_view name, int64_t local_rank = 0);

// The device from `device_name`, the ranks from torchrun's environment and, for a launch of
// several processes, their group (core/process_group.h). `auto` on a machine with GPUs takes
// cuda:LOCAL_RANK. A command that runs as one process refuses a launch of several, rather
// than doing the same work in each.
Runtime make_runtime(std::string_view device_name, Launch launch = Launch::single_process);

}  // namespace distillery
