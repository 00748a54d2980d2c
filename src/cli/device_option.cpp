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

}  // namespace distillery
