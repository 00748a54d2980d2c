// defines: module_tensors, load_module_tensors
// Moving a module's parameters and buffers to and from named tensors (safetensors files), with
// every mismatch — missing, unexpected, wrong shape or dtype — reported by name.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn { class Module; }

namespace distillery {

// Parameters then buffers, under their dotted module paths ("enc.0.conv0.weight").
std::vector<std::pair<std::string, at::Tensor>> module_tensors(const torch::nn::Module& module);

// Copies `tensors` into the module in place; `source` names the file in errors.
void load_module_tensors(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors, const std::string& source);

}  // namespace distillery
