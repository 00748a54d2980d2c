#include "eval/npz.h"

#include <fmt/format.h>
#include <torch/types.h>
#include <zip.h>
#include <zlib.h>

#include <array>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/npy.h"

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
  DISTILLERY_CHECK(std::filesystem::exists(path), Error("file not found").file(path.string()).expected("a .npz archive"));
  int code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
  if (!archive) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    const std::string message = zip_error_strerror(&error);
    zip_error_fini(&error);
    throw Error("not a readable .npz (zip) archive").file(path.string()).got(message);
  }
  std::map<std::string, at::Tensor> arrays;
  try {
    const auto entries = zip_get_num_entries(archive, 0);
    for (zip_int64_t i = 0; i < entries; ++i) {
      zip_stat_t stat;
      DISTILLERY_CHECK(zip_stat_index(archive, static_cast<zip_uint64_t>(i), 0, &stat) == 0, Error("cannot read the archive directory").file(path.string()));
      std::string name = stat.name;
      const auto where = path.string() + " (" + name + ")";
      DISTILLERY_CHECK(name.ends_with(".npy"), Error("archive member is not a .npy array").file(where));
      DISTILLERY_CHECK(stat.size <= (uint64_t{1} << 36), Error("archive member is implausibly large").file(where));
      std::string bytes(static_cast<size_t>(stat.size), '\0');
      zip_file_t* member = zip_fopen_index(archive, static_cast<zip_uint64_t>(i), 0);
      DISTILLERY_CHECK(member, Error("cannot open archive member").file(where).got(zip_strerror(archive)));
      const auto read = zip_fread(member, bytes.data(), bytes.size());
      zip_fclose(member);
      DISTILLERY_CHECK(read == static_cast<zip_int64_t>(bytes.size()), Error("archive member is truncated or corrupt").file(where));
      // libzip compares the CRC only when a read reaches past the end, which a read of exactly
      // the member's size never does: compare it here.
      const auto crc = crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size());
      DISTILLERY_CHECK((stat.valid & ZIP_STAT_CRC) && crc == stat.crc,
                       Error("archive member fails its CRC check: the file is damaged").file(where)
                           .expected(fmt::format("CRC-32 {:08x}", stat.crc)).got(fmt::format("{:08x}", crc)));
      arrays[name.substr(0, name.size() - 4)] = read_npy(bytes, where);
    }
  } catch (...) {
    zip_discard(archive);
    throw;
  }
  zip_discard(archive);
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
