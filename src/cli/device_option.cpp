#include "cli/device_option.h"

#include <CLI/CLI.hpp>

#include "core/runtime.h"

namespace distillery {

void add_device_option(CLI::App& command, std::string& device) {
  device = "auto";
  command.add_option("--device", device, "where networks run: " + device_names_help())->capture_default_str();
}

void add_memory_check_option(CLI::App& command, bool& check) {
  check = true;
  command.add_flag("--no-memory-check{false}", check,
                   "run even when the memory estimate (results, batch, network) exceeds the free memory of the device");
}

void add_precision_option(CLI::App& command, std::string& precision) {
  precision = "fp32";
  command.add_option("--precision", precision, "what the networks compute in: fp32, or bf16 (matrix products and convolutions autocast to "
                                               "bfloat16; noise, solver state and results stay float32)")
      ->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
}

PrecisionScope::PrecisionScope(const std::string& precision, const c10::Device& device) {
  if (precision == "bf16") autocast_.emplace(device.type());
}

void add_cuda_graph_option(CLI::App& command, bool& graphs) {
  graphs = false;
  command.add_flag("--cuda-graph", graphs, "replay the networks as CUDA graphs, one captured per batch shape: the host launches each "
                                           "evaluation at once instead of kernel by kernel (CUDA devices)");
}

}  // namespace distillery
