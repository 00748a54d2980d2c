#include "io/hdf5.h"

#include <fmt/format.h>
#include <hdf5.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace distillery {

namespace {

// The innermost (most specific) message on HDF5's error stack, e.g. "file signature not found".
std::string hdf5_message() {
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD,
           [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
             auto& text = *static_cast<std::string*>(out);
             if (text.empty() && e->desc) text = e->desc;
             return 0;
           },
           &message);
  H5Eclear2(H5E_DEFAULT);
  return message.empty() ? "unknown HDF5 error" : message;
}

// HDF5 describes a failed system call with a time stamp, buffer addresses and byte counts; the
// operation and the system's reason ("file write failed: No space left on device") are what
// a user can act on.
std::string without_call_details(const std::string& description) {
  const std::string marker = "error message = '";
  const auto reason = description.find(marker);
  if (reason == std::string::npos) return description;
  const auto start = reason + marker.size();
  return description.substr(0, description.find(':')) + ": " + description.substr(start, description.find('\'', start) - start);
}

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path, const std::string& object = {}) {
  const auto reason = without_call_details(hdf5_message());
  auto error = Error(what).file(path.string()).got(reason);
  if (!object.empty()) error.field(object);
  for (const int out_of_space : {ENOSPC, EFBIG, EDQUOT})
    if (reason.ends_with(std::strerror(out_of_space)))
      error.hint("make room (free disk space, or raise the quota or file-size limit) and run the command again; a recording resumes with --resume");
  throw error;
}

template <typename Id>
Id checked(Id id, const char* what, const std::filesystem::path& path, const std::string& object = {}) {
  if (id < 0) fail(what, path, object);
  return id;
}

// Closes an HDF5 identifier at scope exit with the matching close function.
struct Handle {
  hid_t id;
  herr_t (*closer)(hid_t);
  ~Handle() {
    if (id >= 0) closer(id);
  }
};

// The half type numpy and h5py use: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
hid_t make_half_type() {
  const hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, 10, 5, 0, 10);
  H5Tset_size(t, 2);
  H5Tset_ebias(t, 15);
  return t;
}

// A type identifier to close after use (every type gets a copy so one closer fits all).
hid_t type_id(H5Type type) {
  switch (type) {
    case H5Type::F64: return H5Tcopy(H5T_IEEE_F64LE);
    case H5Type::F32: return H5Tcopy(H5T_IEEE_F32LE);
    case H5Type::F16: return make_half_type();
    case H5Type::I64: return H5Tcopy(H5T_STD_I64LE);
  }
  return -1;
}

// Without this, HDF5 closes every file still open when the process exits. A file whose close
// failed (a full disk) is still on that list, half torn down, and closing it again crashed
// the process after the error had been reported. Files this layer writes are temporaries
// renamed into place only once closed, so nothing is lost by leaving the rest to the kernel.
const bool kNoExitHandler = [] {
  H5dont_atexit();
  return true;
}();

// HDF5 prints its error stack (dozens of HDF5-DIAG lines per failure) unless told not to, and
// in a thread-safe build the setting is per thread: shards are written on a second thread.
void silence_this_thread() {
  thread_local const bool silenced = [] {
    (void)kNoExitHandler;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)silenced;
}

}  // namespace

size_t h5_type_size(H5Type type) {
  switch (type) {
    case H5Type::F64: case H5Type::I64: return 8;
    case H5Type::F32: return 4;
    case H5Type::F16: return 2;
  }
  return 0;
}

std::string h5_type_name(H5Type type) {
  switch (type) {
    case H5Type::F64: return "float64";
    case H5Type::F32: return "float32";
    case H5Type::F16: return "float16";
    case H5Type::I64: return "int64";
  }
  return "?";
}

H5File H5File::create(const std::filesystem::path& path) {
  silence_this_thread();
  const Handle fapl{H5Pcreate(H5P_FILE_ACCESS), H5Pclose};
  // The 1.8 format: readable by every HDF5 and h5py release still in use.
  H5Pset_libver_bounds(fapl.id, H5F_LIBVER_V18, H5F_LIBVER_V18);
  // No modification times, on the root group (through the file creation list) or on datasets.
  const Handle fcpl{H5Pcreate(H5P_FILE_CREATE), H5Pclose};
  H5Pset_obj_track_times(fcpl.id, false);
  return H5File(checked(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.id, fapl.id), "cannot create HDF5 file", path), path);
}

H5File H5File::open_read_only(const std::filesystem::path& path) {
  silence_this_thread();
  DISTILLERY_CHECK(std::filesystem::exists(path), Error("file not found").file(path.string()));
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw Error("not an HDF5 file (no HDF5 signature; truncated or overwritten?)").file(path.string());
  }
  return H5File(checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "cannot open HDF5 file", path), path);
}

H5File::H5File(H5File&& other) noexcept : id_(other.id_), path_(std::move(other.path_)) { other.id_ = -1; }

H5File& H5File::operator=(H5File&& other) noexcept {
  silence_this_thread();
  if (this != &other) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = other.id_;
    path_ = std::move(other.path_);
    other.id_ = -1;
  }
  return *this;
}

H5File::~H5File() {
  silence_this_thread();
  if (id_ >= 0) H5Fclose(id_);
}

void H5File::close() {
  silence_this_thread();
  if (id_ >= 0) {
    const hid_t id = id_;
    id_ = -1;
    checked(H5Fclose(id), "cannot close HDF5 file", path_);
  }
}

void H5File::write_dataset(const std::string& name, H5Type type, const std::vector<uint64_t>& dims, const void* data,
                           const H5DatasetOptions& options) {
  silence_this_thread();
  const std::vector<hsize_t> shape(dims.begin(), dims.end());
  const Handle space{checked(H5Screate_simple(static_cast<int>(shape.size()), shape.data(), nullptr), "cannot create dataspace", path_, name), H5Sclose};
  const Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  H5Pset_obj_track_times(dcpl.id, false);
  if (!options.chunk.empty()) {
    const std::vector<hsize_t> chunk(options.chunk.begin(), options.chunk.end());
    checked(H5Pset_chunk(dcpl.id, static_cast<int>(chunk.size()), chunk.data()), "invalid chunk shape", path_, name);
    if (options.deflate_level > 0) {
      H5Pset_shuffle(dcpl.id);
      checked(H5Pset_deflate(dcpl.id, static_cast<unsigned>(options.deflate_level)), "cannot enable deflate", path_, name);
    }
  }
  const Handle t{type_id(type), H5Tclose};
  const Handle dataset{checked(H5Dcreate2(id_, name.c_str(), t.id, space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), "cannot create dataset", path_, name), H5Dclose};
  checked(H5Dwrite(dataset.id, t.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "cannot write dataset", path_, name);
}

void H5File::write_attribute(const std::string& name, const std::string& value) {
  silence_this_thread();
  const Handle t{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(t.id, std::max<size_t>(value.size(), 1));
  H5Tset_cset(t.id, H5T_CSET_UTF8);
  const Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  const Handle attribute{checked(H5Acreate2(id_, name.c_str(), t.id, space.id, H5P_DEFAULT, H5P_DEFAULT), "cannot create attribute", path_, name), H5Aclose};
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  checked(H5Awrite(attribute.id, t.id, padded.data()), "cannot write attribute", path_, name);
}

void H5File::write_attribute(const std::string& name, int64_t value) {
  silence_this_thread();
  const Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  const Handle attribute{checked(H5Acreate2(id_, name.c_str(), H5T_STD_I64LE, space.id, H5P_DEFAULT, H5P_DEFAULT), "cannot create attribute", path_, name), H5Aclose};
  checked(H5Awrite(attribute.id, H5T_NATIVE_INT64, &value), "cannot write attribute", path_, name);
}

bool H5File::has_dataset(const std::string& name) const {
  silence_this_thread();
  const htri_t exists = H5Lexists(id_, name.c_str(), H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return exists > 0;
}

namespace {
Handle open_dataset(hid_t file, const std::string& name, const std::filesystem::path& path) {
  DISTILLERY_CHECK(H5Lexists(file, name.c_str(), H5P_DEFAULT) > 0, Error(fmt::format("dataset '{}' is missing", name)).file(path.string()));
  return {checked(H5Dopen2(file, name.c_str(), H5P_DEFAULT), "cannot open dataset", path, name), H5Dclose};
}
}  // namespace

std::vector<uint64_t> H5File::dims(const std::string& name) const {
  silence_this_thread();
  const auto dataset = open_dataset(id_, name, path_);
  const Handle space{checked(H5Dget_space(dataset.id), "cannot read dataspace", path_, name), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  std::vector<hsize_t> shape(static_cast<size_t>(std::max(rank, 0)));
  H5Sget_simple_extent_dims(space.id, shape.data(), nullptr);
  return {shape.begin(), shape.end()};
}

std::optional<H5Type> H5File::type(const std::string& name) const {
  silence_this_thread();
  const auto dataset = open_dataset(id_, name, path_);
  const Handle t{checked(H5Dget_type(dataset.id), "cannot read type", path_, name), H5Tclose};
  const auto type_class = H5Tget_class(t.id);
  const size_t size = H5Tget_size(t.id);
  if (type_class == H5T_FLOAT) {
    if (size == 8) return H5Type::F64;
    if (size == 4) return H5Type::F32;
    if (size == 2) return H5Type::F16;
  }
  if (type_class == H5T_INTEGER && size == 8 && H5Tget_sign(t.id) == H5T_SGN_2) return H5Type::I64;
  return std::nullopt;
}

void H5File::read_rows(const std::string& name, H5Type type, uint64_t first, uint64_t count, void* out) const {
  silence_this_thread();
  const auto dataset = open_dataset(id_, name, path_);
  const Handle file_space{checked(H5Dget_space(dataset.id), "cannot read dataspace", path_, name), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(file_space.id);
  std::vector<hsize_t> shape(static_cast<size_t>(std::max(rank, 1)));
  H5Sget_simple_extent_dims(file_space.id, shape.data(), nullptr);
  DISTILLERY_CHECK(rank >= 1 && first + count <= shape[0],
                   Error(fmt::format("rows {}..{} of dataset '{}' are out of range", first, first + count, name)).file(path_.string())
                       .expected(fmt::format("fewer than {} rows", rank >= 1 ? shape[0] : 0)));
  std::vector<hsize_t> start(shape.size(), 0), extent = shape;
  start[0] = first;
  extent[0] = count;
  checked(H5Sselect_hyperslab(file_space.id, H5S_SELECT_SET, start.data(), nullptr, extent.data(), nullptr), "cannot select rows", path_, name);
  const Handle memory_space{H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr), H5Sclose};
  const Handle t{type_id(type), H5Tclose};
  checked(H5Dread(dataset.id, t.id, memory_space.id, file_space.id, H5P_DEFAULT, out), "cannot read dataset (corrupt data?)", path_, name);
}

void H5File::read_all(const std::string& name, H5Type type, void* out) const {
  const auto shape = dims(name);
  read_rows(name, type, 0, shape.empty() ? 1 : shape[0], out);
}

bool H5File::has_attribute(const std::string& name) const {
  silence_this_thread();
  const htri_t exists = H5Aexists(id_, name.c_str());
  H5Eclear2(H5E_DEFAULT);
  return exists > 0;
}

std::string H5File::string_attribute(const std::string& name) const {
  silence_this_thread();
  DISTILLERY_CHECK(has_attribute(name), Error(fmt::format("attribute '{}' is missing", name)).file(path_.string()));
  const Handle attribute{checked(H5Aopen(id_, name.c_str(), H5P_DEFAULT), "cannot open attribute", path_, name), H5Aclose};
  const Handle t{H5Aget_type(attribute.id), H5Tclose};
  DISTILLERY_CHECK(H5Tget_class(t.id) == H5T_STRING && !H5Tis_variable_str(t.id),
                   Error(fmt::format("attribute '{}' is not a fixed-length string", name)).file(path_.string()));
  std::string value(H5Tget_size(t.id), '\0');
  checked(H5Aread(attribute.id, t.id, value.data()), "cannot read attribute", path_, name);
  value.resize(std::strlen(value.c_str()));
  return value;
}

int64_t H5File::int_attribute(const std::string& name) const {
  silence_this_thread();
  DISTILLERY_CHECK(has_attribute(name), Error(fmt::format("attribute '{}' is missing", name)).file(path_.string()));
  const Handle attribute{checked(H5Aopen(id_, name.c_str(), H5P_DEFAULT), "cannot open attribute", path_, name), H5Aclose};
  const Handle t{H5Aget_type(attribute.id), H5Tclose};
  DISTILLERY_CHECK(H5Tget_class(t.id) == H5T_INTEGER, Error(fmt::format("attribute '{}' is not an integer", name)).file(path_.string()));
  int64_t value = 0;
  checked(H5Aread(attribute.id, H5T_NATIVE_INT64, &value), "cannot read attribute", path_, name);
  return value;
}

}  // namespace distillery
