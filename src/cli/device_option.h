// defines: add_device_option
// --device for every command that runs a network: one declaration, one default, one check.
#pragma once

#include <string>

namespace CLI { class App; }

namespace distillery {

// --device auto|cpu|cuda|cuda:N into `device` (default auto); commands turn it into their
// Runtime with make_runtime once parsing is done.
void add_device_option(CLI::App& command, std::string& device);

}  // namespace distillery
