// defines: ProcessGroup, connect_process_group
// The processes of one launch (torchrun, or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set by hand)
// as PyTorch's c10d joins them: Gloo between CPU processes, NCCL between GPUs. A group of one
// process is the default and does nothing. Every collective is called by every rank in the same
// order; when another rank has died or cannot be reached, it ends in an Error naming what was
// being exchanged, never a hang (a rank's death closes its connections at once, and a rank that
// stops answering is given up after the timeout).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace distillery {

class ProcessGroup {
 public:
  ProcessGroup();  // one process
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  // "Gloo", "NCCL", or "none" for one process.
  std::string backend() const;

  // Sums each tensor over the ranks, in place. `what` names the exchange in errors.
  void sum(const std::vector<at::Tensor>& tensors, std::string_view what) const;
  // Rank 0's values into every rank's tensors, in place.
  void broadcast(const std::vector<at::Tensor>& tensors, std::string_view what) const;
  // Every rank's rows (dimension 0, any count per rank, the other dimensions equal) concatenated
  // in rank order, on every rank. Exact: the values are moved, not computed.
  at::Tensor gather_rows(const at::Tensor& rows, std::string_view what) const;
  void barrier(std::string_view what) const;

 private:
  friend std::shared_ptr<const ProcessGroup> connect_process_group(int64_t, int64_t, c10::Device, std::chrono::milliseconds);
  struct Backend;
  std::unique_ptr<Backend> backend_;
  int64_t rank_ = 0, world_size_ = 1;
};

// The group of a launch of `world_size` processes, this one being `rank`: the rendezvous at
// MASTER_ADDR:MASTER_PORT (hosted by rank 0, or by torchrun's agent when it says so with
// TORCHELASTIC_USE_AGENT_STORE), NCCL when `device` is a GPU, else Gloo. One process needs no
// rendezvous and gets the default group.
std::shared_ptr<const ProcessGroup> connect_process_group(int64_t rank, int64_t world_size, c10::Device device,
                                                          std::chrono::milliseconds timeout = std::chrono::minutes(30));

}  // namespace distillery
