#include "trajectories/trajectory_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <torch/types.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <cstring>

#include "core/error.h"
#include "core/memory_check.h"
#include "data/label_policy.h"
#include "io/atomic_file.h"
#include "io/hdf5.h"
#include "samplers/sampler.h"

namespace distillery {

namespace {

H5Type storage_type(const StoreSettings& s) { return s.dtype == "float16" ? H5Type::F16 : H5Type::F32; }

// Read a few trajectories at a time, so that checking a shard of large images stays small.
void expect_finite(const H5File& file, const std::string& dataset, int64_t first_index) {
  const auto dims = file.dims(dataset);
  const uint64_t rows = dims.empty() ? 0 : dims[0];
  uint64_t row_numel = 1;
  for (size_t d = 1; d < dims.size(); ++d) row_numel *= dims[d];
  const uint64_t chunk = std::max<uint64_t>(1, (uint64_t{1} << 22) / std::max<uint64_t>(row_numel, 1));
  std::vector<float> values;
  for (uint64_t first = 0; first < rows; first += chunk) {
    const uint64_t count = std::min(chunk, rows - first);
    values.resize(count * row_numel);
    file.read_rows(dataset, H5Type::F32, first, count, values.data());
    const auto bad = std::find_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); });
    DISTILLERY_CHECK(bad == values.end(),
                     Error(fmt::format("dataset '{}' holds a non-finite value", dataset)).file(file.path().string())
                         .expected("finite states").got(fmt::format("{} in trajectory {}", *bad,
                                                                    first_index + static_cast<int64_t>(first + (bad - values.begin()) / row_numel))));
  }
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string crc_hex(uint32_t crc) { return fmt::format("{:08x}", crc); }

std::vector<uint64_t> shape_with(std::initializer_list<int64_t> leading, const std::vector<int64_t>& sample_shape) {
  std::vector<uint64_t> dims;
  for (auto d : leading) dims.push_back(static_cast<uint64_t>(d));
  for (auto d : sample_shape) dims.push_back(static_cast<uint64_t>(d));
  return dims;
}

// "3, 5-9, 12" for a sorted list of shard numbers.
std::string ranges_text(const std::vector<int64_t>& sorted) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    parts.push_back(i == j ? std::to_string(sorted[i]) : fmt::format("{}-{}", sorted[i], sorted[j]));
    i = j + 1;
  }
  return fmt::format("{}", fmt::join(parts, ", "));
}


}  // namespace

void set_sampling_request(StoreSettings& s, const SampleRequest& r, const ScheduleSpec& schedule_spec) {
  s.sampler = r.sampler;
  s.steps = r.steps;
  s.schedule = std::string(schedule_name(schedule_spec.kind));
  s.sigma_min = schedule_spec.sigma_min;
  s.sigma_max = schedule_spec.sigma_max;
  s.rho = schedule_spec.rho;
  s.s_churn = r.options.s_churn;
  s.s_tmin = r.options.s_tmin;
  s.s_tmax = r.options.s_tmax;
  s.s_noise = r.options.s_noise;
  s.labels = r.labels;
  s.guidance = r.guidance;
  s.seed = r.seed;
  s.num = r.num;
}

SampleRequest sampling_request(const StoreSettings& s) {
  SampleRequest r;
  r.sampler = s.sampler;
  r.steps = static_cast<int>(s.steps);
  r.schedule = schedule_from_name(s.schedule);
  r.sigma_min = s.sigma_min;
  r.sigma_max = s.sigma_max;
  r.rho = s.rho;
  r.options = {s.s_churn, s.s_tmin, s.s_tmax, s.s_noise};
  r.labels = s.labels;
  r.guidance = s.guidance;
  r.seed = s.seed;
  r.num = s.num;
  return r;
}

ShardEntry write_shard(const std::filesystem::path& dir, const StoreSettings& settings, int64_t shard, const ShardContents& c) {
  const int64_t n = settings.shard_length(shard), T = static_cast<int64_t>(settings.stored_steps.size());
  const auto x_dims = shape_with({n, T}, settings.sample_shape);
  DISTILLERY_CHECK(c.x.dim() == static_cast<int64_t>(x_dims.size()) && std::equal(x_dims.begin(), x_dims.end(), c.x.sizes().begin(),
                                                                                [](uint64_t a, int64_t b) { return a == static_cast<uint64_t>(b); }),
                   Error("shard states have the wrong shape").expected(fmt::format("[{}]", fmt::join(x_dims, ", "))));
  DISTILLERY_CHECK(c.denoised.defined() == settings.denoised, Error("shard denoised states do not match the store settings"));
  const auto storage = storage_type(settings);
  const auto as_stored = [&](const at::Tensor& t) { return t.to(storage == H5Type::F16 ? torch::kHalf : torch::kFloat32).contiguous(); };
  // Whole trajectories per chunk, as many as fit in ~64 KiB: a random read touches one chunk,
  // and small samples (2-D points) do not drown in per-chunk overhead.
  const int64_t trajectory_bytes = static_cast<int64_t>(c.x[0].numel()) * static_cast<int64_t>(h5_type_size(storage));
  const int64_t rows_per_chunk = std::clamp<int64_t>((int64_t{64} << 10) / std::max<int64_t>(trajectory_bytes, 1), 1, n);
  H5DatasetOptions chunked;
  chunked.chunk = shape_with({rows_per_chunk, T}, settings.sample_shape);
  chunked.deflate_level = static_cast<int>(settings.compression);

  const auto final_path = dir / shard_file_name(shard);
  const auto tmp = temporary_sibling(final_path);
  {
    auto file = H5File::create(tmp);
    const auto x = as_stored(c.x);
    file.write_dataset("x", storage, x_dims, x.data_ptr(), chunked);
    if (settings.denoised) {
      const auto d = as_stored(c.denoised);
      auto options = chunked;
      options.chunk[1] = static_cast<uint64_t>(settings.denoised_states());
      file.write_dataset("denoised", storage, shape_with({n, settings.denoised_states()}, settings.sample_shape), d.data_ptr(), options);
    }
    const auto sigmas = settings.stored_sigmas();
    file.write_dataset("sigmas", H5Type::F64, {static_cast<uint64_t>(T)}, sigmas.data());
    file.write_dataset("stored_steps", H5Type::I64, {static_cast<uint64_t>(T)}, settings.stored_steps.data());
    const auto index = c.sample_index.to(torch::kInt64).contiguous(), labels = c.labels.to(torch::kInt64).contiguous();
    file.write_dataset("sample_index", H5Type::I64, {static_cast<uint64_t>(n)}, index.data_ptr());
    file.write_dataset("labels", H5Type::I64, {static_cast<uint64_t>(n)}, labels.data_ptr());
    file.write_attribute("format", std::string(kStoreFormat));
    file.write_attribute("format_version", int64_t{kStoreFormatVersion});
    file.write_attribute("settings", settings.to_json(/*pretty=*/false));
    file.write_attribute("shard", shard);
    file.write_attribute("first_index", settings.shard_first(shard));
    file.write_attribute("count", n);
    file.close();
  }
  publish_atomically(tmp, final_path);
  return {shard_file_name(shard), shard, settings.shard_first(shard), n, std::filesystem::file_size(final_path), file_crc32(final_path)};
}

void append_manifest(const std::filesystem::path& dir, const ShardEntry& entry) {
  const auto path = dir / "manifest.jsonl";
  const Fd fd(::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
  DISTILLERY_CHECK(fd.get() >= 0, Error("cannot open the manifest for appending").file(path.string()).got(std::strerror(errno)));
  DISTILLERY_CHECK(::flock(fd.get(), LOCK_EX) == 0, Error("cannot lock the manifest").file(path.string()).got(std::strerror(errno)));
  // Under the lock the only possible torn line is the last one, left by a writer killed
  // mid-line: cut it off (its shard is recorded again by whoever owns it).
  struct stat info {};
  char last = '\n';
  if (::fstat(fd.get(), &info) == 0 && info.st_size > 0 && ::pread(fd.get(), &last, 1, info.st_size - 1) == 1 && last != '\n') {
    // Rare (only after a kill), so reading the whole manifest here costs nothing on the usual path.
    std::string text(static_cast<size_t>(info.st_size), '\0');
    if (::pread(fd.get(), text.data(), text.size(), 0) == static_cast<ssize_t>(text.size())) {
      const auto last_newline = text.rfind('\n');
      (void)!::ftruncate(fd.get(), last_newline == std::string::npos ? 0 : static_cast<off_t>(last_newline + 1));
    }
  }
  const std::string line = manifest_line(entry);
  const bool written = ::write(fd.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd.get()) == 0;
  ::flock(fd.get(), LOCK_UN);
  DISTILLERY_CHECK(written, Error("cannot append to the manifest").file(path.string()).got(std::strerror(errno)));
}

std::vector<ShardEntry> read_manifest(const std::filesystem::path& dir, std::vector<std::string>* problems) {
  std::ifstream in(dir / "manifest.jsonl", std::ios::binary);
  return parse_manifest(std::string((std::istreambuf_iterator<char>(in)), {}), problems);
}

uint32_t file_crc32(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DISTILLERY_CHECK(in, Error("cannot read file").file(path.string()));
  std::vector<char> buffer(1 << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(buffer.data()), static_cast<uInt>(in.gcount()));
  }
  return static_cast<uint32_t>(crc);
}

std::vector<int64_t> recorded_labels(const StoreSettings& settings, const std::vector<int64_t>& sample_indices) {
  auto labels = labels_for(settings.labels, settings.num_classes, sample_indices);
  if (labels.empty()) labels.assign(sample_indices.size(), -1);
  return labels;
}

void verify_shard(const std::filesystem::path& dir, const ShardEntry& entry, const StoreSettings& settings, bool check_crc) {
  const auto path = dir / entry.file;
  DISTILLERY_CHECK(std::filesystem::exists(path), Error("shard listed in the manifest is missing").file(path.string()).hint("record --resume regenerates it"));
  const auto bytes = std::filesystem::file_size(path);
  DISTILLERY_CHECK(bytes == entry.bytes, Error("shard has the wrong size (truncated or replaced)").file(path.string())
                                             .expected(fmt::format("{} bytes (manifest)", entry.bytes)).got(fmt::format("{} bytes", bytes)));
  if (check_crc) {
    const auto crc = file_crc32(path);
    DISTILLERY_CHECK(crc == entry.crc32, Error("shard checksum mismatch (the file is corrupt)").file(path.string())
                                             .expected("crc32 " + crc_hex(entry.crc32) + " (manifest)").got("crc32 " + crc_hex(crc)));
  }
  const auto file = H5File::open_read_only(path);
  DISTILLERY_CHECK(file.has_attribute("format") && file.string_attribute("format") == kStoreFormat,
                   Error("not a trajectory shard").file(path.string()).expected(std::string("attribute format = ") + kStoreFormat));
  DISTILLERY_CHECK(file.int_attribute("format_version") == kStoreFormatVersion,
                   Error("unsupported shard format version").file(path.string()).expected(std::to_string(kStoreFormatVersion))
                       .got(std::to_string(file.int_attribute("format_version"))));
  const auto shard_settings = StoreSettings::from_json(file.string_attribute("settings"), path.string() + " (attribute settings)");
  if (const auto diff = settings.difference(shard_settings))
    throw Error("shard was recorded with other settings than the store (another teacher or recording?)").file(path.string())
        .expected("store.json's settings").got(*diff + " (store vs shard)");
  const int64_t n = entry.count, T = static_cast<int64_t>(settings.stored_steps.size());
  DISTILLERY_CHECK(file.int_attribute("shard") == entry.shard && file.int_attribute("first_index") == entry.first_index &&
                       file.int_attribute("count") == n,
                   Error("shard attributes disagree with its manifest line").file(path.string())
                       .expected(fmt::format("shard {}, first index {}, count {}", entry.shard, entry.first_index, n))
                       .got(fmt::format("shard {}, first index {}, count {}", file.int_attribute("shard"), file.int_attribute("first_index"),
                                        file.int_attribute("count"))));
  const auto expect_dims = [&](const std::string& name, const std::vector<uint64_t>& dims) {
    const auto got = file.dims(name);
    DISTILLERY_CHECK(got == dims, Error(fmt::format("dataset '{}' has the wrong shape", name)).file(path.string())
                                      .expected(fmt::format("[{}]", fmt::join(dims, ", "))).got(fmt::format("[{}]", fmt::join(got, ", "))));
  };
  expect_dims("x", shape_with({n, T}, settings.sample_shape));
  DISTILLERY_CHECK(file.type("x") == storage_type(settings),
                   Error("dataset 'x' has the wrong element type").file(path.string()).expected(settings.dtype));
  if (settings.denoised) expect_dims("denoised", shape_with({n, settings.denoised_states()}, settings.sample_shape));
  expect_dims("sigmas", {static_cast<uint64_t>(T)});
  expect_dims("sample_index", {static_cast<uint64_t>(n)});
  expect_dims("labels", {static_cast<uint64_t>(n)});
  std::vector<double> sigmas(static_cast<size_t>(T));
  file.read_all("sigmas", H5Type::F64, sigmas.data());
  DISTILLERY_CHECK(sigmas == settings.stored_sigmas(), Error("dataset 'sigmas' disagrees with the store's σ grid").file(path.string()));
  std::vector<int64_t> index(static_cast<size_t>(n));
  file.read_all("sample_index", H5Type::I64, index.data());
  for (int64_t i = 0; i < n; ++i)
    DISTILLERY_CHECK(index[static_cast<size_t>(i)] == entry.first_index + i,
                     Error("dataset 'sample_index' is not the shard's index range").file(path.string())
                         .expected(fmt::format("{}..{}", entry.first_index, entry.first_index + n - 1)));
  // A checksum proves the bytes are the ones recorded, not that they make sense: a shard
  // rewritten with its manifest line would otherwise feed a NaN or a foreign label to training.
  std::vector<int64_t> labels(static_cast<size_t>(n));
  file.read_all("labels", H5Type::I64, labels.data());
  const auto expected_labels = recorded_labels(settings, index);
  for (size_t i = 0; i < labels.size(); ++i)
    DISTILLERY_CHECK(labels[i] == expected_labels[i],
                     Error("dataset 'labels' disagrees with the store's label policy").file(path.string())
                         .expected(fmt::format("label {} for trajectory {} (labels '{}', {} classes)", expected_labels[i], index[i],
                                               settings.labels, settings.num_classes))
                         .got(std::to_string(labels[i])));
  expect_finite(file, "x", entry.first_index);
  if (settings.denoised) expect_finite(file, "denoised", entry.first_index);
}

StoreSettings read_store_settings(const std::filesystem::path& dir) {
  const auto path = dir / "store.json";
  DISTILLERY_CHECK(std::filesystem::exists(path),
                   Error("not a trajectory store (no store.json)").file(dir.string()).hint("record one with `distillery record`"));
  DISTILLERY_CHECK(std::filesystem::is_regular_file(path), Error("store.json is not a regular file").file(path.string()));
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  DISTILLERY_CHECK(!in.bad(), Error("cannot read store.json").file(path.string()));
  return StoreSettings::from_json(text, path.string());
}

StoreReport inspect_store(const std::filesystem::path& dir) {
  StoreReport report;
  try {
    report.settings = read_store_settings(dir);
  } catch (const Error& e) {
    report.problems.push_back(e.what());
    return report;
  }
  const auto& settings = *report.settings;
  const auto entries = read_manifest(dir, &report.problems);
  std::map<int64_t, int> listed;
  std::set<std::string> listed_files;
  for (const auto& entry : entries) {
    listed_files.insert(entry.file);
    if (entry.shard < 0 || entry.shard >= settings.shard_count() || entry.file != shard_file_name(entry.shard) ||
        entry.first_index != settings.shard_first(entry.shard) || entry.count != settings.shard_length(entry.shard)) {
      report.problems.push_back(fmt::format("manifest line for {} (shard {}, first index {}, count {}) does not fit the store's layout of {} shards of {}",
                                            entry.file, entry.shard, entry.first_index, entry.count, settings.shard_count(), settings.shard_size));
      continue;
    }
    if (++listed[entry.shard] > 1) continue;  // counted once; reported below
    try {
      verify_shard(dir, entry, settings);
      ++report.shards_present;
      report.trajectories_present += entry.count;
    } catch (const Error& e) {
      report.problems.push_back(e.what());
    }
  }
  for (const auto& [shard, times] : listed)
    if (times > 1) report.problems.push_back(fmt::format("shard {} is listed {} times in manifest.jsonl", shard, times));
  std::vector<int64_t> missing;
  for (int64_t k = 0; k < settings.shard_count(); ++k)
    if (!listed.count(k)) missing.push_back(k);
  if (!missing.empty())
    report.problems.push_back(fmt::format("incomplete: {} of {} shards not recorded yet (shards {}); `distillery record ... --resume` records them",
                                          missing.size(), settings.shard_count(), ranges_text(missing)));
  for (const auto& item : std::filesystem::directory_iterator(dir)) {
    const auto name = item.path().filename().string();
    report.bytes_on_disk += item.is_regular_file() ? item.file_size() : 0;
    if (name.starts_with("shard-") && !listed_files.count(name))
      report.notes.push_back(name + " is not in the manifest (a recording stopped between writing it and listing it; --resume rewrites it)");
    else if (name.starts_with(".shard-"))
      report.notes.push_back(name + " is a temporary of a recording that is running or was killed");
  }
  return report;
}

std::string StoreReport::summary() const {
  if (!settings) return "not a readable trajectory store\n";
  const auto& s = *settings;
  std::string nfe = "?";
  try {
    nfe = std::to_string(make_sampler(s.sampler)->nfe(s.steps));
  } catch (const Error&) {
  }
  std::string text;
  text += fmt::format("format        {} v{}\n", kStoreFormat, kStoreFormatVersion);
  text += fmt::format("teacher       {} (hash {})\n", s.teacher, s.teacher_hash);
  text += fmt::format("sampler       {}, {} steps ({} NFE), seed {}, labels '{}', guidance {}\n", s.sampler, s.steps, nfe, s.seed, s.labels, s.guidance);
  text += fmt::format("σ grid        {} ρ={}: {:.4g} … {:.4g}, then 0; stored {} of {} states ({})\n", s.schedule, s.rho, s.sigmas.front(),
                      s.sigmas[s.sigmas.size() - 2], s.stored_steps.size(), s.sigmas.size(), s.store);
  text += fmt::format("samples       shape [{}], {} classes\n", fmt::join(s.sample_shape, ", "), s.num_classes);
  text += fmt::format("trajectories  {} of {} in {} of {} shards of {}\n", trajectories_present, s.num, shards_present, s.shard_count(), s.shard_size);
  text += fmt::format("storage       {}{}, compression {}, size on disk {}\n", s.dtype, s.denoised ? " + denoised" : "",
                      s.compression ? fmt::format("deflate {}", s.compression) : "none", human_bytes(static_cast<double>(bytes_on_disk)));
  text += problems.empty() ? "status        OK: complete and intact\n" : fmt::format("status        {} problem(s)\n", problems.size());
  return text;
}

}  // namespace distillery
