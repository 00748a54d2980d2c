// defines: add_device_option, add_memory_check_option
// --device for every command that runs a network, and --no-memory-check for those whose memory
// grows with the user's numbers: one declaration, one default, one check each.
#pragma once

#include <string>

namespace CLI { class App; }

namespace distillery {

// --device auto|cpu|cuda|cuda:N into `device` (default auto); commands turn it into their
// Runtime with make_runtime once parsing is done.
void add_device_option(CLI::App& command, std::string& device);

// --no-memory-check: `check` (default true) becomes false, and the command runs even when its
// memory estimate exceeds what the device has free.
void add_memory_check_option(CLI::App& command, bool& check);

}  // namespace distillery
