#include "core/process_group.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <map>

#include "core/error.h"
#include "core/library_text.h"
#include "core/runtime.h"

#if DISTILLERY_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if DISTILLERY_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace distillery {

struct ProcessGroup::Backend {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::string name;
};

ProcessGroup::ProcessGroup() = default;
ProcessGroup::~ProcessGroup() = default;

std::string ProcessGroup::backend() const { return backend_ ? backend_->name : "none"; }

namespace {

// The library's own words without its C++ stack trace, on one line.
std::string exception_text(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  auto text = library_text(c10_error ? c10_error->what_without_backtrace() : e.what());
  if (const auto end = text.find('\n'); end != std::string::npos) text.resize(end);
  return text;
}

template <typename Start>
void exchange(int64_t rank, int64_t world_size, std::string_view what, Start&& start) {
  try {
    start()->wait();
  } catch (const std::exception& e) {
    throw Error(fmt::format("process {} of {}: exchanging {} with the other processes failed", rank, world_size, what))
        .got(exception_text(e))
        .hint("another process of the launch has stopped or cannot be reached; its own output says why");
  }
}

// The tensors of each dtype as one flat buffer: one exchange per dtype instead of per tensor
// (Gloo and NCCL take a list only as one tensor per device).
template <typename Exchange>
void exchange_flattened(const std::vector<at::Tensor>& tensors, Exchange&& exchange_buffer) {
  // Parameters are written in place, outside any graph.
  const at::AutoGradMode no_grad(false);
  std::map<c10::ScalarType, std::vector<at::Tensor>> by_type;
  for (const auto& t : tensors) by_type[t.scalar_type()].push_back(t);
  for (auto& [type, group] : by_type) {
    std::vector<at::Tensor> flat;
    for (const auto& t : group) flat.push_back(t.reshape({-1}));
    auto buffer = at::cat(flat);
    exchange_buffer(buffer);
    int64_t offset = 0;
    for (auto& t : group) {
      t.copy_(buffer.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

}  // namespace

void ProcessGroup::sum(const std::vector<at::Tensor>& tensors, std::string_view what) const {
  if (!backend_) return;
  exchange_flattened(tensors, [&](at::Tensor& buffer) {
    std::vector<at::Tensor> list{buffer};
    exchange(rank_, world_size_, what, [&] { return backend_->backend->allreduce(list, c10d::AllreduceOptions{}); });
  });
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors, std::string_view what) const {
  if (!backend_) return;
  exchange_flattened(tensors, [&](at::Tensor& buffer) {
    std::vector<at::Tensor> list{buffer};
    exchange(rank_, world_size_, what, [&] { return backend_->backend->broadcast(list, c10d::BroadcastOptions{}); });
  });
}

at::Tensor ProcessGroup::gather_rows(const at::Tensor& rows, std::string_view what) const {
  if (!backend_) return rows;
  // All-gather needs equal shapes: every rank's rows padded to the largest count, then cut.
  auto counts = at::zeros({world_size_}, rows.options().dtype(at::kLong));
  counts[rank_] = rows.size(0);
  sum({counts}, fmt::format("the row counts of {}", what));
  const auto count = counts.cpu();
  const auto* per_rank = count.data_ptr<int64_t>();
  const auto most = count.max().item<int64_t>();
  auto shape = rows.sizes().vec();
  shape[0] = most;
  auto padded = at::zeros(shape, rows.options());
  padded.narrow(0, 0, rows.size(0)).copy_(rows);
  std::vector<at::Tensor> inputs{padded};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int64_t r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty_like(padded));
  exchange(rank_, world_size_, what, [&] { return backend_->backend->allgather(outputs, inputs); });
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < world_size_; ++r) parts.push_back(outputs[0][static_cast<size_t>(r)].narrow(0, 0, per_rank[r]));
  return at::cat(parts);
}

void ProcessGroup::barrier(std::string_view what) const {
  if (!backend_) return;
  exchange(rank_, world_size_, what, [&] { return backend_->backend->barrier(); });
}

std::shared_ptr<const ProcessGroup> connect_process_group(int64_t rank, int64_t world_size, c10::Device device, std::chrono::milliseconds timeout) {
  auto group = std::make_shared<ProcessGroup>();
  if (world_size <= 1) return group;
  DISTILLERY_CHECK(rank < world_size, Error("environment variable RANK is not below WORLD_SIZE").expected(fmt::format("0..{}", world_size - 1))
                                          .got(std::to_string(rank)));
  const char* address = std::getenv("MASTER_ADDR");
  const auto port = environment_count("MASTER_PORT", -1);
  DISTILLERY_CHECK(address && *address && port > 0 && port < 65536,
                   Error(fmt::format("a launch of {} processes needs MASTER_ADDR and MASTER_PORT (0 < port < 65536), as torchrun sets them", world_size))
                       .got(fmt::format("MASTER_ADDR={} MASTER_PORT={}", address ? address : "(unset)", port < 0 ? "(unset)" : std::to_string(port)))
                       .hint("launch with torchrun --nproc_per_node=N distillery ..."));
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  // torchrun's agent hosts the store itself when it says so; otherwise rank 0 does.
  options.isServer = !(agent_store && std::string_view(agent_store) == "True") && rank == 0;
  options.numWorkers = static_cast<size_t>(world_size);
  options.multiTenant = true;
  const auto& backend_name = device.is_cuda() ? "NCCL" : "Gloo";
  try {
    auto store = c10::make_intrusive<c10d::PrefixStore>("distillery", c10::make_intrusive<c10d::TCPStore>(address, options));
    group->backend_ = std::make_unique<ProcessGroup::Backend>();
    group->backend_->name = backend_name;
    if (device.is_cuda()) {
#if DISTILLERY_WITH_NCCL
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = timeout;
      group->backend_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(rank), static_cast<int>(world_size), nccl);
#else
      throw Error("this build has no NCCL, which several processes on GPUs exchange through").hint("build with CUDA and the NCCL headers of the torch wheel");
#endif
    } else {
#if DISTILLERY_WITH_GLOO
      group->backend_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(rank), static_cast<int>(world_size),
                                                                             c10d::ProcessGroupGloo::Options::create_default(timeout));
#else
      throw Error("this build has no Gloo, which several processes on CPUs exchange through").hint("build with Gloo's headers (Debian's libgloo-dev)");
#endif
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("process {} of {} could not join the others ({}) through {}:{}", rank, world_size, backend_name, address, port))
        .got(exception_text(e))
        .hint("every process needs the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, and rank 0 (or torchrun's agent) must be reachable there");
  }
  group->rank_ = rank;
  group->world_size_ = world_size;
  return group;
}

}  // namespace distillery
