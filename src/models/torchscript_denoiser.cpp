#include "models/torchscript_denoiser.h"

#include <fmt/format.h>
#include <torch/script.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"
#include "core/tensor_checks.h"

namespace distillery {

struct TorchScriptDenoiser::Module {
  torch::jit::script::Module module;
};

namespace {
Error interface_error(const std::filesystem::path& path, const std::string& what) {
  return Error(fmt::format("TorchScript teacher does not have the documented interface: {}", what))
      .file(path.string())
      .hint("export it with tools/export_teacher.py (forward(x, sigma, labels) and attributes sample_shape, num_classes, sigma_min, sigma_max)");
}
}  // namespace

TorchScriptDenoiser::TorchScriptDenoiser(const std::filesystem::path& path) : module_(std::make_unique<Module>()) {
  DISTILLERY_CHECK(std::filesystem::exists(path), Error("TorchScript teacher not found").file(path.string()));
  try {
    module_->module = torch::jit::load(path.string(), torch::kCPU);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("cannot load TorchScript file: {}", e.what_without_backtrace())).file(path.string());
  }
  module_->module.eval();
  for (const char* name : {"sample_shape", "num_classes", "sigma_min", "sigma_max"})
    if (!module_->module.hasattr(name)) throw interface_error(path, fmt::format("attribute '{}' is missing", name));
  if (!module_->module.find_method("forward")) throw interface_error(path, "no forward method");
  try {
    sample_shape_ = module_->module.attr("sample_shape").toIntVector();
    num_classes_ = module_->module.attr("num_classes").toInt();
    sigma_min_ = module_->module.attr("sigma_min").toDouble();
    sigma_max_ = module_->module.attr("sigma_max").toDouble();
  } catch (const c10::Error&) {
    throw interface_error(path, "attribute types (sample_shape: List[int], num_classes: int, sigma_min/sigma_max: float)");
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  description_ = fmt::format("torchscript {} sha-fnv1a64={}", path.filename().string(), fnv1a64_hex(bytes.str()));
}

TorchScriptDenoiser::~TorchScriptDenoiser() = default;

void TorchScriptDenoiser::to(const c10::Device& device) {
  module_->module.to(device);
  device_ = device;
}

at::Tensor TorchScriptDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  const auto label_tensor = labels.defined() ? labels : torch::full({x.size(0)}, -1, x.options().dtype(torch::kInt64));
  at::Tensor out;
  try {
    out = module_->module.forward({x, sigma, label_tensor}).toTensor();
  } catch (const c10::Error& e) {
    throw Error(fmt::format("TorchScript teacher failed: {}", e.what_without_backtrace())).hint("check the exported module's input shapes");
  }
  check_shape(out, x.sizes().vec(), "output of the TorchScript teacher");
  return out;
}

}  // namespace distillery
