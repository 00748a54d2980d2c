// defines: H5Type, H5DatasetOptions, H5File
// A small RAII layer over the HDF5 C library for what the trajectory store needs: whole
// datasets written once (chunked, optionally shuffle+deflate), string/integer/float
// attributes on the root group, and reads of whole datasets or of row ranges. Every failure
// is an Error naming the file, the object and HDF5's own innermost message; HDF5's automatic
// error printing is switched off. Files carry no modification times, so identical content
// gives identical bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace distillery {

// Element types as stored; F16 is the IEEE half type h5py and numpy read as float16.
enum class H5Type { F64, F32, F16, I64 };
size_t h5_type_size(H5Type type);
std::string h5_type_name(H5Type type);

struct H5DatasetOptions {
  std::vector<uint64_t> chunk = {};  // empty: contiguous
  int deflate_level = 0;             // 0: no compression; 1..9 with the shuffle filter
};

class H5File {
 public:
  static H5File create(const std::filesystem::path& path);  // truncates
  static H5File open_read_only(const std::filesystem::path& path);
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();

  void write_dataset(const std::string& name, H5Type type, const std::vector<uint64_t>& dims, const void* data,
                     const H5DatasetOptions& options = {});
  void write_attribute(const std::string& name, const std::string& value);
  void write_attribute(const std::string& name, int64_t value);

  bool has_dataset(const std::string& name) const;
  std::vector<uint64_t> dims(const std::string& name) const;
  // The stored element type, or nullopt for a type this layer does not read.
  std::optional<H5Type> type(const std::string& name) const;
  // Reads rows [first, first + count) along dimension 0, converted to `type`, into `out`.
  void read_rows(const std::string& name, H5Type type, uint64_t first, uint64_t count, void* out) const;
  void read_all(const std::string& name, H5Type type, void* out) const;

  bool has_attribute(const std::string& name) const;
  std::string string_attribute(const std::string& name) const;
  int64_t int_attribute(const std::string& name) const;

  void close();  // flushes; further calls are errors
  const std::filesystem::path& path() const { return path_; }

 private:
  H5File(int64_t id, std::filesystem::path path) : id_(id), path_(std::move(path)) {}
  int64_t id_ = -1;
  std::filesystem::path path_;
};

}  // namespace distillery
