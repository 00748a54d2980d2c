#include "eval/npz.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>
#include <zip.h>

#include <cstring>
#include <regex>

#include "core/error.h"
#include "io/atomic_file.h"

namespace distillery {

namespace {

struct Dtype {
  const char* descr;
  at::ScalarType type;
  size_t size;
};
constexpr Dtype kDtypes[] = {{"<f8", at::kDouble, 8}, {"<f4", at::kFloat, 4}, {"<i8", at::kLong, 8}, {"|u1", at::kByte, 1}, {"<u1", at::kByte, 1}};

// One .npy member: magic, version, header length, a Python-literal dict, then the raw data.
at::Tensor parse_npy(const std::string& bytes, const std::string& where) {
  const auto fail = [&](const std::string& what) { return Error("malformed .npy member: " + what).file(where); };
  DISTILLERY_CHECK(bytes.size() >= 10 && bytes.compare(0, 6, "\x93NUMPY") == 0, fail("no .npy magic").expected("\\x93NUMPY"));
  const auto major = static_cast<unsigned char>(bytes[6]);
  DISTILLERY_CHECK(major >= 1 && major <= 3, fail(fmt::format("unsupported .npy version {}", major)).expected("1, 2 or 3"));
  size_t header_length = 0, offset = 0;
  if (major == 1) {
    header_length = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else {
    DISTILLERY_CHECK(bytes.size() >= 12, fail("truncated header"));
    for (int i = 3; i >= 0; --i) header_length = (header_length << 8) | static_cast<unsigned char>(bytes[8 + static_cast<size_t>(i)]);
    offset = 12;
  }
  DISTILLERY_CHECK(offset + header_length <= bytes.size(), fail("header runs past the end of the member"));
  const std::string header = bytes.substr(offset, header_length);
  std::smatch m;
  DISTILLERY_CHECK(std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([^']*)')")), fail("header has no 'descr'").got(header));
  const std::string descr = m[1];
  DISTILLERY_CHECK(std::regex_search(header, m, std::regex(R"('fortran_order'\s*:\s*(True|False))")), fail("header has no 'fortran_order'").got(header));
  DISTILLERY_CHECK(m[1] == "False", fail("Fortran-ordered arrays are not supported").expected("C order (fortran_order False)"));
  DISTILLERY_CHECK(std::regex_search(header, m, std::regex(R"('shape'\s*:\s*\(([^)]*)\))")), fail("header has no 'shape'").got(header));
  std::vector<int64_t> shape;
  const std::string dims = m[1];
  const std::regex number(R"(\d+)");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll(it->str()));
  const Dtype* dtype = nullptr;
  for (const auto& d : kDtypes)
    if (descr == d.descr) dtype = &d;
  DISTILLERY_CHECK(dtype, fail(fmt::format("unsupported dtype '{}'", descr)).expected("little-endian float64, float32, int64 or uint8"));
  int64_t count = 1;
  for (auto d : shape) {
    DISTILLERY_CHECK(d <= (int64_t{1} << 40) / std::max<int64_t>(count, 1), fail("shape is implausibly large").got(dims));
    count *= d;
  }
  const size_t data_bytes = static_cast<size_t>(count) * dtype->size;
  DISTILLERY_CHECK(bytes.size() - offset - header_length == data_bytes,
                   fail("data size does not match the shape").expected(fmt::format("{} bytes for shape ({}) of {}", data_bytes, dims, descr))
                       .got(fmt::format("{} bytes", bytes.size() - offset - header_length)));
  auto tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype->type));
  std::memcpy(tensor.data_ptr(), bytes.data() + offset + header_length, data_bytes);
  return tensor;
}

std::string npy_bytes(const at::Tensor& array) {
  const char* descr = nullptr;
  for (const auto& d : kDtypes)
    if (d.type == array.scalar_type() && !descr) descr = d.descr;
  DISTILLERY_CHECK(descr, Error("cannot store this tensor type in .npz").expected("float64, float32, int64 or uint8"));
  // numpy's spelling: "(2048,)" for one dimension, "(3, 4)" for more.
  std::string shape = fmt::format("{}", fmt::join(array.sizes(), ", "));
  if (array.dim() == 1) shape += ",";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, shape);
  // Version 1.0: the whole preamble padded with spaces to a multiple of 64, ending in '\n'.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  const auto contiguous = array.contiguous();
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
      arrays[name.substr(0, name.size() - 4)] = parse_npy(bytes, where);
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
