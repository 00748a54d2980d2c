#include "models/cuda_graph_denoiser.h"

#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/types.h>

#include <map>
#include <tuple>

#include "core/error.h"

#if DISTILLERY_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace distillery {

#if DISTILLERY_WITH_CUDA
namespace {
// `waiting` waits for what `done` has queued so far.
void wait_for(const c10::cuda::CUDAStream& waiting, const c10::cuda::CUDAStream& done) {
  at::cuda::CUDAEvent event;
  event.record(done);
  event.block(waiting);
}
}  // namespace

// Its types are members, not in an anonymous namespace: a class with external linkage should not
// hold members of internal-linkage types (GCC's -Wsubobject-linkage, which shows once the file
// is compiled inside a batch of the library's sources).
struct CudaGraphDenoiser::Graphs {
  // What a graph is specific to: the inputs' shape and dtypes, whether labels and a jump target
  // come, and whether the networks run under bf16 autocast.
  using Key = std::tuple<std::vector<int64_t>, c10::ScalarType, c10::ScalarType, bool, bool, bool>;
  struct Evaluation {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    at::Tensor x, sigma, sigma_target, labels, out;
  };
  std::map<Key, Evaluation> captured;
};
#else
struct CudaGraphDenoiser::Graphs {};
#endif

bool cuda_graphs_built() {
#if DISTILLERY_WITH_CUDA
  return true;
#else
  return false;
#endif
}

CudaGraphDenoiser::CudaGraphDenoiser(Denoiser& inner) : inner_(inner), graphs_(std::make_unique<Graphs>()) {}

CudaGraphDenoiser::~CudaGraphDenoiser() = default;

void CudaGraphDenoiser::to(const c10::Device& device) {
  // The graphs hold the old device's buffers and weights' addresses.
  graphs_ = std::make_unique<Graphs>();
  inner_.to(device);
}

int64_t CudaGraphDenoiser::graphs() const {
#if DISTILLERY_WITH_CUDA
  return static_cast<int64_t>(graphs_->captured.size());
#else
  return 0;
#endif
}

at::Tensor CudaGraphDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) { return evaluate(x, sigma, {}, labels); }

at::Tensor CudaGraphDenoiser::denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) {
  return evaluate(x, sigma, sigma_target, labels);
}

at::Tensor CudaGraphDenoiser::evaluate(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) {
  const auto eager = [&](const at::Tensor& x_in, const at::Tensor& sigma_in, const at::Tensor& target_in, const at::Tensor& labels_in) {
    return target_in.defined() ? inner_.denoise_toward(x_in, sigma_in, target_in, labels_in) : inner_.denoise(x_in, sigma_in, labels_in);
  };
#if DISTILLERY_WITH_CUDA
  // A graph replays without autograd: an evaluation that must be differentiated runs eagerly.
  if (!x.is_cuda() || c10::GradMode::is_enabled()) return eager(x, sigma, sigma_target, labels);
  const Graphs::Key key{x.sizes().vec(), x.scalar_type(), sigma.scalar_type(), labels.defined(), sigma_target.defined(),
                        at::autocast::is_autocast_enabled(at::kCUDA)};
  auto found = graphs_->captured.find(key);
  if (found == graphs_->captured.end()) {
    Graphs::Evaluation captured;
    const c10::cuda::CUDAGuard device_guard(x.device());
    const auto caller = c10::cuda::getCurrentCUDAStream();
    captured.x = x.clone();
    captured.sigma = sigma.clone();
    if (sigma_target.defined()) captured.sigma_target = sigma_target.clone();
    if (labels.defined()) captured.labels = labels.clone();
    const auto side = c10::cuda::getStreamFromPool();
    wait_for(side, caller);
    {
      const c10::cuda::CUDAStreamGuard on_side(side);
      // Lazy initialisation (cuBLAS and cuDNN handles, workspaces, algorithm choices) must
      // happen before the capture, which may not allocate or synchronise outside its pool.
      for (int warm_up = 0; warm_up < 3; ++warm_up) eager(captured.x, captured.sigma, captured.sigma_target, captured.labels);
      // As torch.cuda.make_graphed_callables does: autocast's weight casts must be recomputed
      // inside the graph rather than served from a cache filled outside it.
      const bool autocast_cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);
      captured.graph = std::make_unique<at::cuda::CUDAGraph>();
      bool capturing = false;
      try {
        captured.graph->capture_begin();
        capturing = true;
        captured.out = eager(captured.x, captured.sigma, captured.sigma_target, captured.labels);
        capturing = false;
        captured.graph->capture_end();
      } catch (const std::exception& e) {
        // A forward that failed mid-capture (a host synchronisation, say) leaves the stream
        // capturing: end it, or every later launch on it fails too.
        if (capturing) {
          try {
            captured.graph->capture_end();
          } catch (const std::exception&) {  // the capture was invalidated: the error below says why
          }
        }
        at::autocast::set_autocast_cache_enabled(autocast_cache);
        throw Error(fmt::format("this network cannot be captured as a CUDA graph: {}", e.what())).hint("sample without --cuda-graph");
      }
      at::autocast::set_autocast_cache_enabled(autocast_cache);
    }
    wait_for(caller, side);
    spdlog::debug("captured a CUDA graph for a batch of {}", x.size(0));
    found = graphs_->captured.emplace(key, std::move(captured)).first;
  }
  auto& graph = found->second;
  graph.x.copy_(x);
  graph.sigma.copy_(sigma);
  if (sigma_target.defined()) graph.sigma_target.copy_(sigma_target);
  if (labels.defined()) graph.labels.copy_(labels);
  graph.graph->replay();
  ++replays_;
  // The next replay overwrites the graph's output.
  return graph.out.clone();
#else
  return eager(x, sigma, sigma_target, labels);
#endif
}

SampledDenoiser::SampledDenoiser(Denoiser& network, bool cuda_graph) : network_(network) {
  if (!cuda_graph) return;
  DISTILLERY_CHECK(network.device().is_cuda() && cuda_graphs_built(),
                   Error("--cuda-graph replays CUDA graphs").field("--cuda-graph").expected("--device cuda (a build with CUDA)")
                       .got(network.device().str() + (cuda_graphs_built() ? "" : ", a build without CUDA")));
  graphed_.emplace(network);
}

std::string SampledDenoiser::summary() const {
  return graphed_ ? fmt::format("{} evaluations replayed from {} CUDA graph(s)", graphed_->replays(), graphed_->graphs()) : std::string();
}

}  // namespace distillery
