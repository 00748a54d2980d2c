// defines: MemoryPart, available_memory, require_memory, working_bytes, allocated_bytes, human_bytes
// An estimate of what a command will hold, compared with what its device has free before the
// work starts, so that a `--num` or `--batch` far beyond the machine is refused at once with
// the parts named, instead of ending in the OOM killer or a CUDA out-of-memory error hours in.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace distillery {

struct MemoryPart {
  std::string what;  // e.g. "samples and noise: 2 × 10000 × [1, 28, 28] float32"
  double bytes = 0;
};

// Bytes this process can still take on the device: on the CPU, the kernel's MemAvailable and
// the cgroup's remaining limit, whichever is less; on CUDA, the driver's free memory plus what
// LibTorch holds cached but unused.
uint64_t available_memory(const c10::Device& device);

// Error naming every part, their sum and what the device has, unless the sum fits or `checked`
// is false; its hint names what the user can lower (`smaller`, e.g. "--num or --batch") and
// --no-memory-check, which runs anyway.
void require_memory(const std::vector<MemoryPart>& parts, const c10::Device& device, bool checked, const std::string& smaller);

// Bytes that `work` adds to the device's peak use while it runs: on the CPU the growth of the
// process's peak resident size (where the kernel lets it be reset; else every allocation of
// this thread, counted), on CUDA the peak of allocated memory above the start. Memory freed
// before and reused by the work is not counted: measure before other work frees much.
uint64_t working_bytes(const c10::Device& device, const std::function<void()>& work);

// Every byte of tensor memory allocated on the device while `work` runs, freed or not: more
// than the work holds at its peak, but the same whatever the allocator had cached before, so a
// multiple of it measured once per use holds on any machine and on CPU and CUDA alike.
uint64_t allocated_bytes(const c10::Device& device, const std::function<void()>& work);

// "1.5 GiB", "12.0 MiB", "3.2 KiB".
std::string human_bytes(double bytes);

}  // namespace distillery
