// defines: CudaGraphDenoiser, cuda_graphs_built, SampledDenoiser
// A denoiser whose evaluations are replayed as CUDA graphs. Sampling these small networks on a
// GPU is bound by the host launching their kernels one by one; a graph captured once per input
// shape launches them all at once. Each (shape, dtype, label presence, jump target, autocast)
// gets its graph on first use: three eager warm-up calls on a side stream, one capture, then
// every call copies its inputs into the graph's own tensors, replays and returns a copy of the
// output. On any other device, or in a build without CUDA, it is the wrapped denoiser itself.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "models/denoiser.h"

namespace distillery {

// Whether this build can capture CUDA graphs.
bool cuda_graphs_built();

class CudaGraphDenoiser final : public Denoiser {
 public:
  // `inner` must outlive this wrapper and not move while it lives.
  explicit CudaGraphDenoiser(Denoiser& inner);
  ~CudaGraphDenoiser() override;

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  at::Tensor denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) override;

  c10::Device device() const override { return inner_.device(); }
  void to(const c10::Device& device) override;
  std::vector<int64_t> sample_shape() const override { return inner_.sample_shape(); }
  int64_t num_classes() const override { return inner_.num_classes(); }
  double sigma_min() const override { return inner_.sigma_min(); }
  double sigma_max() const override { return inner_.sigma_max(); }
  std::string describe() const override { return inner_.describe(); }

  // Graphs captured so far, and evaluations replayed from them.
  int64_t graphs() const;
  int64_t replays() const { return replays_; }

 private:
  struct Graphs;
  at::Tensor evaluate(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels);

  Denoiser& inner_;
  std::unique_ptr<Graphs> graphs_;
  int64_t replays_ = 0;
};

// What a command samples with: `network` itself, or, when `cuda_graph` (its --cuda-graph) asks,
// `network` replayed as CUDA graphs; the option is refused by name on any device but CUDA.
class SampledDenoiser {
 public:
  SampledDenoiser(Denoiser& network, bool cuda_graph);
  Denoiser& get() { return graphed_ ? static_cast<Denoiser&>(*graphed_) : network_; }
  // A line for the log: how many evaluations the graphs replayed; empty without them.
  std::string summary() const;

 private:
  Denoiser& network_;
  std::optional<CudaGraphDenoiser> graphed_;
};

}  // namespace distillery
