#include "io/tensor_file.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <bit>
#include <cstring>

#include "core/error.h"

namespace distillery {

static_assert(std::endian::native == std::endian::little, "safetensors stores little-endian bytes; big-endian hosts need byte swapping");

namespace {
struct DtypePair {
  SafetensorsDtype stored;
  c10::ScalarType torch;
};
constexpr DtypePair kTorchDtypes[] = {
    {SafetensorsDtype::BOOL, at::kBool},       {SafetensorsDtype::U8, at::kByte},
    {SafetensorsDtype::I8, at::kChar},         {SafetensorsDtype::U16, at::kUInt16},
    {SafetensorsDtype::I16, at::kShort},       {SafetensorsDtype::F16, at::kHalf},
    {SafetensorsDtype::BF16, at::kBFloat16},   {SafetensorsDtype::U32, at::kUInt32},
    {SafetensorsDtype::I32, at::kInt},         {SafetensorsDtype::F32, at::kFloat},
    {SafetensorsDtype::C64, at::kComplexFloat}, {SafetensorsDtype::F64, at::kDouble},
    {SafetensorsDtype::U64, at::kUInt64},      {SafetensorsDtype::I64, at::kLong},
    {SafetensorsDtype::F8_E5M2, at::kFloat8_e5m2},         {SafetensorsDtype::F8_E4M3, at::kFloat8_e4m3fn},
    {SafetensorsDtype::F8_E8M0, at::kFloat8_e8m0fnu},      {SafetensorsDtype::F8_E4M3FNUZ, at::kFloat8_e4m3fnuz},
    {SafetensorsDtype::F8_E5M2FNUZ, at::kFloat8_e5m2fnuz},
};
}  // namespace

c10::ScalarType to_torch_dtype(SafetensorsDtype dtype) {
  for (const auto& p : kTorchDtypes)
    if (p.stored == dtype) return p.torch;
  throw Error(fmt::format("safetensors dtype {} has no LibTorch equivalent", dtype_name(dtype)))
      .hint("sub-byte formats (F4, F6_*) can be read only as raw bytes");
}

SafetensorsDtype to_safetensors_dtype(c10::ScalarType dtype) {
  for (const auto& p : kTorchDtypes)
    if (p.torch == dtype) return p.stored;
  throw Error(fmt::format("tensor dtype {} cannot be stored in safetensors", c10::toString(dtype)));
}

at::Tensor to_tensor(const SafetensorsFile& file, const TensorRecord& record) {
  auto tensor = torch::empty(record.shape, torch::TensorOptions().dtype(to_torch_dtype(record.dtype)));
  const auto bytes = file.bytes(record);
  if (!bytes.empty()) std::memcpy(tensor.data_ptr(), bytes.data(), bytes.size());
  return tensor;
}

const at::Tensor& TensorFile::get(const std::string& name) const {
  const auto it = tensors.find(name);
  if (it != tensors.end()) return it->second;
  std::string names;
  for (const auto& [key, value] : tensors) names += (names.empty() ? "" : ", ") + key;
  throw Error(fmt::format("tensor '{}' not found", name)).file(source).expected("one of: " + names);
}

TensorFile load_tensor_file(const std::filesystem::path& path) {
  const auto file = SafetensorsFile::read(path);
  TensorFile out;
  out.source = path.string();
  out.metadata = file.metadata();
  for (const auto& record : file.tensors()) out.tensors.emplace(record.name, to_tensor(file, record));
  return out;
}

void save_tensor_file(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep_alive;
  std::vector<TensorBytes> views;
  for (const auto& [name, tensor] : tensors) {
    DISTILLERY_CHECK(tensor.defined(), Error(fmt::format("tensor '{}' is undefined and cannot be saved", name)).file(path.string()));
    const auto& t = keep_alive.emplace_back(tensor.detach().to(torch::kCPU).contiguous());
    views.push_back({name, to_safetensors_dtype(t.scalar_type()), t.sizes().vec(),
                     {static_cast<const uint8_t*>(t.const_data_ptr()), static_cast<size_t>(t.nbytes())}});
  }
  write_safetensors(path, views, metadata);
}

}  // namespace distillery
