// defines: GeneratorStreams, FewStepGenerator
// A k-step student as a training-time generator (DMD2 §4.3): each row starts at one of the
// student's σ, chosen per sample position; a row that starts at a later σ is first brought there
// by the student itself, without gradient (backward simulation: denoise, re-noise at the next
// σ), so the student trains on its own intermediate states rather than the teacher's. A 1-step
// student just denoises σ_max·noise. Every draw is counter-based on the sample positions.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace distillery {

class NetworkDenoiser;

// The noise streams (core/rng.h) a method gives its generator: the input noise, the start step
// of each row, and the base of the re-noising streams (base + step, step < 100).
struct GeneratorStreams {
  uint64_t noise, start_step, simulation;
};

class FewStepGenerator {
 public:
  // `sigmas`: the student's grid, positive and strictly decreasing (at most 100 steps);
  // `classes`: the labels it generates (student_classes; empty: all of the network's).
  FewStepGenerator(NetworkDenoiser& network, std::vector<double> sigmas, GeneratorStreams streams, std::vector<int64_t> classes = {});

  // The student's denoised output for the positions (gradient reaches the network from the
  // last call only, unless the caller disables it) and the labels it was given: the
  // (position mod count)-th of its classes for a class-conditional network, else undefined.
  std::pair<at::Tensor, at::Tensor> generate(uint64_t seed, const std::vector<int64_t>& positions) const;
  at::Tensor labels(const std::vector<int64_t>& positions) const;

 private:
  NetworkDenoiser& network_;
  std::vector<double> sigmas_;
  GeneratorStreams streams_;
  std::vector<int64_t> classes_;
};

}  // namespace distillery
