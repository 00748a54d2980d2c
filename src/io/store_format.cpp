#include "io/store_format.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/library_text.h"

namespace distillery {

// One list of fields for store.json in both directions (the names are the JSON keys).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(StoreSettings, teacher, teacher_hash, sample_shape, num_classes, sampler, steps, schedule, sigma_min,
                                   sigma_max, rho, s_churn, s_tmin, s_tmax, s_noise, labels, guidance, seed, num, shard_size, store,
                                   denoised, dtype, compression, sigmas, stored_steps)

namespace {

using nlohmann::json;

json settings_json(const StoreSettings& s) {
  json j = s;
  j["format"] = kStoreFormat;
  j["format_version"] = kStoreFormatVersion;
  return j;
}

// A string as itself, anything else as JSON.
std::string value_text(const json& value) { return value.is_string() ? value.get<std::string>() : value.dump(-1, ' ', false, json::error_handler_t::replace); }

// nlohmann turns a JSON float into an integer field with a cast that is undefined outside the
// integer's range (8e21 as int64, found by fuzz_store): integer fields must hold JSON integers.
bool integral(const json& value) { return value.is_number_integer(); }

void check_integer_fields(const json& j, const std::string& source) {
  for (const char* key : {"num_classes", "steps", "seed", "num", "shard_size", "compression"}) {
    const auto value = j.find(key);
    DISTILLERY_CHECK(value == j.end() || integral(*value), Error(fmt::format("store settings field '{}' is not an integer", key)).file(source)
                                                               .got(value_text(*value)));
  }
  for (const char* key : {"sample_shape", "stored_steps"}) {
    const auto value = j.find(key);
    DISTILLERY_CHECK(value == j.end() || !value->is_array() || std::all_of(value->begin(), value->end(), integral),
                     Error(fmt::format("store settings field '{}' holds a non-integer", key)).file(source).got(value_text(*value)));
  }
}

// Readers and `inspect` keep per-shard state and size buffers by these counts: one no
// recording could reach would take all memory before the first shard is looked at.
constexpr int64_t kMaxShards = int64_t{1} << 24, kMaxTrajectories = int64_t{1} << 40;
constexpr int64_t kMaxSteps = 100000;             // sample/record --steps allow no more
constexpr int64_t kMaxSampleElements = int64_t{1} << 28;

// Everything a reader later indexes or sizes by, checked once here so that no later use
// (σ of a stored step, a shard's length, a buffer of a sample's size) can go out of range.
void check_consistent(const StoreSettings& s, const std::string& source) {
  const auto require = [&](bool holds, const std::string& expected, const std::string& got) {
    DISTILLERY_CHECK(holds, Error("store settings are inconsistent").file(source).expected(expected).got(got));
  };
  require(s.num > 0 && s.shard_size > 0, "num > 0 and shard_size > 0", fmt::format("num {}, shard_size {}", s.num, s.shard_size));
  DISTILLERY_CHECK(s.num <= kMaxTrajectories && s.shard_count() <= kMaxShards,
                   Error("store settings declare more trajectories or shards than a store can hold").file(source)
                       .expected(fmt::format("at most {} trajectories in at most {} shards", kMaxTrajectories, kMaxShards))
                       .got(fmt::format("{} trajectories in {} shards of {}", s.num, s.shard_count(), s.shard_size)));
  require(s.steps >= 1 && s.steps <= kMaxSteps && s.sigmas.size() == static_cast<size_t>(s.steps + 1),
          fmt::format("steps in 1..{} and steps + 1 sigmas", kMaxSteps), fmt::format("steps {}, {} sigmas", s.steps, s.sigmas.size()));
  require(std::all_of(s.sigmas.begin(), s.sigmas.end(), [](double v) { return std::isfinite(v) && v >= 0; }) &&
              std::is_sorted(s.sigmas.rbegin(), s.sigmas.rend()),
          "sigmas finite, non-negative and non-increasing", fmt::format("[{}]", fmt::join(s.sigmas, ", ")));
  require(s.stored_steps.size() >= 2 && s.stored_steps.front() == 0 && s.stored_steps.back() == s.steps &&
              std::adjacent_find(s.stored_steps.begin(), s.stored_steps.end(), [](int64_t a, int64_t b) { return b <= a; }) == s.stored_steps.end(),
          fmt::format("stored_steps increasing from 0 to steps ({})", s.steps), fmt::format("[{}]", fmt::join(s.stored_steps, ", ")));
  int64_t elements = 1;
  bool shape_ok = !s.sample_shape.empty() && s.sample_shape.size() <= 4;
  for (auto d : s.sample_shape) {
    shape_ok = shape_ok && d >= 1 && d <= kMaxSampleElements;
    if (shape_ok) elements *= d;
    shape_ok = shape_ok && elements <= kMaxSampleElements;
  }
  require(shape_ok, fmt::format("sample_shape of 1 to 4 positive sizes, at most {} elements", kMaxSampleElements),
          fmt::format("[{}]", fmt::join(s.sample_shape, ", ")));
  require(s.num_classes >= 0 && s.num_classes <= (int64_t{1} << 20), "num_classes in 0..1048576", std::to_string(s.num_classes));
  require(s.dtype == "float32" || s.dtype == "float16", "dtype float32 or float16", "'" + s.dtype + "'");
  require(s.compression >= 0 && s.compression <= 9, "compression in 0..9", std::to_string(s.compression));
  std::vector<int64_t> kept_by_mode;
  try {
    kept_by_mode = stored_steps_for(s.store, s.steps);
  } catch (const Error&) {
  }
  require(kept_by_mode == s.stored_steps, "stored_steps as the store mode keeps them",
          fmt::format("store '{}' with stored_steps [{}]", s.store, fmt::join(s.stored_steps, ", ")));
}

}  // namespace

std::string StoreSettings::to_json(bool pretty) const { return pretty ? settings_json(*this).dump(2) + "\n" : settings_json(*this).dump(); }

StoreSettings StoreSettings::from_json(const std::string& text, const std::string& source) {
  const auto j = json::parse(text, nullptr, false);
  DISTILLERY_CHECK(j.is_object(), Error("store settings are not a JSON object").file(source));
  const auto format = j.find("format");
  DISTILLERY_CHECK(format != j.end() && *format == kStoreFormat, Error("not a trajectory store").file(source).expected(std::string("format ") + kStoreFormat)
                                                                     .got(format == j.end() ? "none" : value_text(*format)));
  const auto version = j.find("format_version");
  DISTILLERY_CHECK(version != j.end() && *version == kStoreFormatVersion,
                   Error("unsupported trajectory store version").file(source).expected(std::to_string(kStoreFormatVersion))
                       .got(version == j.end() ? "none" : value_text(*version)));
  check_integer_fields(j, source);
  StoreSettings s;
  try {
    s = j.get<StoreSettings>();
  } catch (const json::exception& e) {
    throw Error("store settings lack a field or have a wrong type").file(source).got(library_text(e.what()));
  }
  check_consistent(s, source);
  return s;
}

std::optional<std::string> StoreSettings::difference(const StoreSettings& other) const {
  auto a = settings_json(*this), b = settings_json(other);
  a.erase("teacher");
  b.erase("teacher");
  // The teacher first: it explains the other differences when it is among them.
  std::vector<std::string> differences;
  if (a["teacher_hash"] != b["teacher_hash"]) differences.push_back(fmt::format("teacher_hash: {} vs {}", a["teacher_hash"].dump(), b["teacher_hash"].dump()));
  for (const auto& [key, value] : a.items())
    if (key != "teacher_hash" && b[key] != value) differences.push_back(fmt::format("{}: {} vs {}", key, value.dump(), b[key].dump()));
  if (differences.empty()) return std::nullopt;
  return fmt::format("{}", fmt::join(differences, "; "));
}

int64_t StoreSettings::shard_length(int64_t shard) const { return std::min(shard_size, num - shard_first(shard)); }

std::vector<double> StoreSettings::stored_sigmas() const {
  std::vector<double> out;
  for (auto step : stored_steps) out.push_back(sigmas.at(static_cast<size_t>(step)));
  return out;
}

int64_t StoreSettings::denoised_states() const {
  int64_t n = 0;
  for (double sigma : stored_sigmas()) n += sigma > 0;
  return n;
}

std::vector<int64_t> stored_steps_for(const std::string& mode, int64_t steps) {
  std::vector<int64_t> kept;
  if (mode == "full") {
    for (int64_t i = 0; i <= steps; ++i) kept.push_back(i);
  } else if (mode == "endpoints") {
    kept = {0, steps};
  } else if (mode.starts_with("every:")) {
    int64_t k = 0;
    try {
      size_t used = 0;
      k = std::stoll(mode.substr(6), &used);
      if (used != mode.size() - 6) k = 0;
    } catch (const std::exception&) {
      k = 0;
    }
    DISTILLERY_CHECK(k >= 1, Error(fmt::format("bad store mode '{}'", mode)).field("--store").expected("every:K with an integer K ≥ 1"));
    for (int64_t i = 0; i <= steps; i += k) kept.push_back(i);
    if (kept.back() != steps) kept.push_back(steps);
  } else {
    throw Error(fmt::format("unknown store mode '{}'", mode)).field("--store").expected("full, endpoints or every:K");
  }
  return kept;
}

std::string shard_file_name(int64_t shard) { return fmt::format("shard-{:06d}.h5", shard); }

namespace {

// Exactly eight hex digits, as manifest_line writes them.
std::optional<uint32_t> parse_crc_hex(const std::string& text) {
  if (text.size() != 8 || !std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
    return std::nullopt;
  return static_cast<uint32_t>(std::stoul(text, nullptr, 16));
}

}  // namespace

std::vector<ShardEntry> parse_manifest(const std::string& text, std::vector<std::string>* problems) {
  std::vector<ShardEntry> entries;
  std::istringstream in(text);
  int64_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    const auto j = json::parse(line, nullptr, false);
    std::optional<ShardEntry> entry;
    try {
      const auto integer_at = [&](const char* key) { return j.contains(key) && integral(j.at(key)); };
      if (j.is_object() && integer_at("shard") && integer_at("first_index") && integer_at("count") && integer_at("bytes")) {
        ShardEntry e;
        j.at("file").get_to(e.file);
        j.at("shard").get_to(e.shard);
        j.at("first_index").get_to(e.first_index);
        j.at("count").get_to(e.count);
        j.at("bytes").get_to(e.bytes);
        if (const auto crc = parse_crc_hex(j.at("crc32").get<std::string>())) {
          e.crc32 = *crc;
          entry = e;
        }
      }
    } catch (const json::exception&) {
    }
    if (entry) {
      entries.push_back(*entry);
    } else if (problems) {
      problems->push_back(fmt::format("manifest.jsonl line {} is not a complete entry (cut short by a kill, or edited): '{}'", line_number,
                                      line.substr(0, 60)));
    }
  }
  return entries;
}

std::string manifest_line(const ShardEntry& entry) {
  return json{{"file", entry.file}, {"shard", entry.shard}, {"first_index", entry.first_index}, {"count", entry.count},
              {"bytes", entry.bytes}, {"crc32", fmt::format("{:08x}", entry.crc32)}}.dump() + "\n";
}

}  // namespace distillery
