// defines: CpuThreads, choose_cpu_threads, use_cpu_threads
// How many threads LibTorch's CPU kernels use in this process. Every process otherwise starts
// one per core, so two processes on one machine (torchrun's ranks, two `--part` recorders, a
// `distill` beside a `record`) oversubscribe the cores and each runs several times slower.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace distillery {

struct CpuThreads {
  int64_t threads;
  std::string reason;  // for the log: where the number came from
};

// `requested` (--threads) when above 0; else OMP_NUM_THREADS when set (its first value, as
// OpenMP reads a list); else the cores this process may run on divided among torchrun's
// LOCAL_WORLD_SIZE processes, at least 1.
CpuThreads choose_cpu_threads(int64_t requested, const std::optional<std::string>& omp_num_threads, int64_t local_world_size, int64_t cores);

// The choice from the environment and the process's CPU affinity, applied to ATen. An
// OMP_NUM_THREADS that is not a positive integer is an Error naming it.
CpuThreads use_cpu_threads(int64_t requested);

}  // namespace distillery
