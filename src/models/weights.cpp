#include "models/weights.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "core/error.h"
#include "core/tensor_checks.h"

namespace distillery {

std::vector<std::pair<std::string, at::Tensor>> module_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters()) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers()) out.emplace_back(item.key(), item.value());
  return out;
}

void load_module_tensors(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  size_t used = 0;
  for (auto& [name, target] : module_tensors(module)) {
    const auto it = tensors.find(name);
    DISTILLERY_CHECK(it != tensors.end(), Error(fmt::format("weights file lacks tensor '{}'", name))
                                              .file(source)
                                              .hint("the file was saved from a different architecture or configuration"));
    check_shape(it->second, target.sizes().vec(), fmt::format("tensor '{}' in {}", name, source));
    check_dtype(it->second, target.scalar_type(), fmt::format("tensor '{}' in {}", name, source));
    // A NaN weight makes every output NaN; found here, it is named instead of the output.
    if (it->second.is_floating_point()) {
      const auto nonfinite = torch::logical_not(torch::isfinite(it->second)).sum().item<int64_t>();
      DISTILLERY_CHECK(nonfinite == 0, Error(fmt::format("tensor '{}' holds non-finite values", name)).file(source).expected("finite weights")
                                           .got(fmt::format("{} NaN or Inf of {}", nonfinite, it->second.numel())));
    }
    target.copy_(it->second);
    ++used;
  }
  if (used != tensors.size()) {
    std::vector<std::string> names;
    for (const auto& [name, target] : module_tensors(module)) names.push_back(name);
    for (const auto& [name, tensor] : tensors)
      DISTILLERY_CHECK(std::find(names.begin(), names.end(), name) != names.end(),
                       Error(fmt::format("weights file has unexpected tensor '{}'", name)).file(source).hint("the file was saved from a different architecture"));
  }
}

}  // namespace distillery
