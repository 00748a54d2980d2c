// defines: TensorFile, load_tensor_file, save_tensor_file, to_torch_dtype, to_safetensors_dtype
// safetensors <-> torch tensors. Tensors come back on the CPU, contiguous, with exactly the
// stored dtype; shape/dtype expectations are checked by the caller (core/tensor_checks.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace distillery {

struct TensorFile {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  std::string source;

  // The tensor called `name`; a missing one is an Error listing what the file holds.
  const at::Tensor& get(const std::string& name) const;
};

c10::ScalarType to_torch_dtype(SafetensorsDtype dtype);  // throws for dtypes torch lacks (F4, F6_*)
SafetensorsDtype to_safetensors_dtype(c10::ScalarType dtype);

at::Tensor to_tensor(const SafetensorsFile& file, const TensorRecord& record);
TensorFile load_tensor_file(const std::filesystem::path& path);
void save_tensor_file(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace distillery
