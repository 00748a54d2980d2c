#include "eval/npz.h"

#include <fmt/format.h>
#include <torch/types.h>
#include <zip.h>

#include <array>
#include <cstring>
#include <fstream>
#include <utility>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/npy.h"
#include "io/npz_archive.h"

namespace distillery {

namespace {

constexpr std::array<std::pair<NpyType, at::ScalarType>, 4> kTensorTypes = {
    {{NpyType::Float64, at::kDouble}, {NpyType::Float32, at::kFloat}, {NpyType::Int64, at::kLong}, {NpyType::UInt8, at::kByte}}};

at::Tensor read_npy(const std::string& bytes, const std::string& where) {
  const auto layout = parse_npy(bytes, where);
  at::ScalarType type = at::kDouble;
  for (const auto& [npy, tensor] : kTensorTypes)
    if (npy == layout.type) type = tensor;
  auto tensor = torch::empty(layout.shape, torch::TensorOptions().dtype(type));
  std::memcpy(tensor.data_ptr(), bytes.data() + layout.data_offset, layout.data_bytes);
  return tensor;
}

std::string npy_bytes(const at::Tensor& array) {
  const NpyType* type = nullptr;
  for (const auto& [npy, tensor] : kTensorTypes)
    if (tensor == array.scalar_type()) type = &npy;
  DISTILLERY_CHECK(type, Error("cannot store this tensor type in .npz").expected("float64, float32, int64 or uint8"));
  const auto contiguous = array.contiguous();
  auto out = npy_preamble(*type, contiguous.sizes().vec());
  out.append(static_cast<const char*>(contiguous.data_ptr()), static_cast<size_t>(contiguous.nbytes()));
  return out;
}

}  // namespace

std::map<std::string, at::Tensor> read_npz(const std::filesystem::path& path) {
  DISTILLERY_CHECK(std::filesystem::is_regular_file(path), Error("file not found").file(path.string()).expected("a .npz archive"));
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::map<std::string, at::Tensor> arrays;
  for (const auto& [name, member] : read_npz_members(bytes, path.string())) arrays[name] = read_npy(member, fmt::format("{} ({}.npy)", path.string(), name));
  return arrays;
}

void write_npz(const std::filesystem::path& path, const std::map<std::string, at::Tensor>& arrays) {
  const auto tmp = temporary_sibling(path);
  int code = 0;
  zip_t* archive = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
  DISTILLERY_CHECK(archive, Error("cannot create .npz archive").file(path.string()));
  std::vector<std::string> contents;  // libzip reads the buffers at zip_close
  contents.reserve(arrays.size());
  for (const auto& [name, array] : arrays) {
    contents.push_back(npy_bytes(array.cpu()));
    zip_source_t* source = zip_source_buffer(archive, contents.back().data(), contents.back().size(), 0);
    const auto index = source ? zip_file_add(archive, (name + ".npy").c_str(), source, ZIP_FL_OVERWRITE) : -1;
    if (index < 0) {
      if (source) zip_source_free(source);
      zip_discard(archive);
      throw Error("cannot add array to .npz archive").file(path.string()).field(name);
    }
    zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0);
  }
  DISTILLERY_CHECK(zip_close(archive) == 0, Error("cannot write .npz archive").file(path.string()).got(zip_strerror(archive)));
  publish_atomically(tmp, path);
}

}  // namespace distillery
