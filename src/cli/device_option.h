// defines: add_device_option, add_memory_check_option, add_precision_option, PrecisionScope, add_cuda_graph_option
// --device for every command that runs a network, --no-memory-check for those whose memory
// grows with the user's numbers, and --precision and --cuda-graph for those that sample: one
// declaration, one default, one check each.
#pragma once

#include <c10/core/Device.h>

#include <optional>
#include <string>

#include "core/bfloat16_autocast.h"

namespace CLI { class App; }

namespace distillery {

// --device auto|cpu|cuda|cuda:N into `device` (default auto); commands turn it into their
// Runtime with make_runtime once parsing is done.
void add_device_option(CLI::App& command, std::string& device);

// --no-memory-check: `check` (default true) becomes false, and the command runs even when its
// memory estimate exceeds what the device has free.
void add_memory_check_option(CLI::App& command, bool& check);

// --precision fp32|bf16 into `precision` (default fp32): what the networks compute in while
// sampling, as train.precision is for training.
void add_precision_option(CLI::App& command, std::string& precision);

// The scope in which a command's networks run at its --precision on `device`: bf16 autocasts
// their matrix products and convolutions; the solver's state, noise and results stay float32.
class PrecisionScope {
 public:
  PrecisionScope(const std::string& precision, const c10::Device& device);

 private:
  std::optional<Bfloat16Autocast> autocast_;
};

// --cuda-graph into `graphs` (default false).
void add_cuda_graph_option(CLI::App& command, bool& graphs);

}  // namespace distillery
