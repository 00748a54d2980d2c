// defines: SafetensorsDtype, SafetensorsFile, TensorBytes, serialize_safetensors, write_safetensors
// The safetensors format (huggingface/safetensors), byte for byte: an 8-byte little-endian
// header length, a JSON header, then one contiguous data section. The reader validates the
// whole header before any tensor is touched, because weights files are untrusted input.
// This layer is independent of LibTorch (the fuzzer links it alone); io/tensor_file.h
// converts to and from torch tensors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace distillery {

enum class SafetensorsDtype {
  BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, C64, F64, U64, I64,
  F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, F4, F6_E2M3, F6_E3M2,
};
inline constexpr int kSafetensorsDtypeCount = 22;

std::string_view dtype_name(SafetensorsDtype dtype);
std::optional<SafetensorsDtype> dtype_from_name(std::string_view name);
int dtype_bits(SafetensorsDtype dtype);
std::string valid_dtype_names();  // "BOOL, U8, ..." for error messages

// The spec's own bound on the header; anything larger is rejected before allocation.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct TensorRecord {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section, end exclusive
};

class SafetensorsFile {
 public:
  // Validates everything (see the .cpp for the list of checks); `source` names the file in errors.
  static SafetensorsFile parse(std::vector<uint8_t> bytes, std::string source);
  static SafetensorsFile read(const std::filesystem::path& path);

  const std::vector<TensorRecord>& tensors() const { return tensors_; }  // sorted by name
  const TensorRecord* find(std::string_view name) const;
  const TensorRecord& at(std::string_view name) const;  // throws Error listing available names
  std::span<const uint8_t> bytes(const TensorRecord& record) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& source() const { return source_; }

 private:
  std::vector<uint8_t> file_;
  uint64_t data_start_ = 0;
  std::vector<TensorRecord> tensors_;
  std::map<std::string, std::string> metadata_;
  std::string source_;
};

struct TensorBytes {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;  // little-endian, C order
};

// Orders tensors as the reference writer does (larger alignment first, then name) and pads
// the header with spaces so the data section starts 8-byte aligned.
std::vector<uint8_t> serialize_safetensors(const std::vector<TensorBytes>& tensors,
                                           const std::map<std::string, std::string>& metadata);
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace distillery
