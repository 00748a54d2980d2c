#include "io/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/library_text.h"
#include "io/atomic_file.h"

namespace distillery {

namespace {

struct DtypeInfo {
  std::string_view name;
  int bits;
};
constexpr std::array<DtypeInfo, kSafetensorsDtypeCount> kDtypes = {{
    {"BOOL", 8}, {"U8", 8}, {"I8", 8}, {"U16", 16}, {"I16", 16}, {"F16", 16}, {"BF16", 16},
    {"U32", 32}, {"I32", 32}, {"F32", 32}, {"C64", 64}, {"F64", 64}, {"U64", 64}, {"I64", 64},
    {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8},
    {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6},
}};
static_assert(static_cast<int>(SafetensorsDtype::F6_E3M2) + 1 == kSafetensorsDtypeCount);

// The spec's limit on any byte size, which also keeps every sum below 2^64.
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 48;

Error format_error(const std::string& source, std::string message) {
  return Error(std::move(message))
      .file(source)
      .hint("not a valid safetensors file (format: 8-byte little-endian header length, JSON header, data)");
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// nlohmann::json keeps the last of duplicate keys silently; the parse callback sees every key
// as it is read, so duplicates are caught at any nesting depth.
nlohmann::json parse_header_json(std::string_view text, const std::string& source) {
  std::vector<std::set<std::string>> keys_per_object;
  std::string duplicate;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys_per_object.emplace_back();
    if (event == E::object_end && !keys_per_object.empty()) keys_per_object.pop_back();
    if (event == E::key && !keys_per_object.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    throw format_error(source, fmt::format("header is not valid JSON ({})", library_text(e.what())));
  }
  if (!duplicate.empty()) throw format_error(source, fmt::format("duplicate key '{}' in the header", duplicate));
  return header;
}

TensorRecord parse_entry(const std::string& name, const nlohmann::json& entry, const std::string& source) {
  auto fail = [&](std::string what) { return format_error(source, fmt::format("tensor '{}': {}", name, what)); };
  if (!entry.is_object()) throw fail("entry is not a JSON object");
  for (const auto& [key, value] : entry.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets") throw fail(fmt::format("unexpected field '{}'", key));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(field)) throw fail(fmt::format("missing field '{}'", field));

  TensorRecord record;
  record.name = name;
  const auto& dtype = entry["dtype"];
  const auto parsed = dtype.is_string() ? dtype_from_name(dtype.get<std::string>()) : std::nullopt;
  if (!parsed)
    throw fail(fmt::format("unknown dtype {}", dtype.dump())).expected("one of " + valid_dtype_names());
  record.dtype = *parsed;

  const auto& shape = entry["shape"];
  if (!shape.is_array()) throw fail("shape is not an array");
  // Bits, not bytes, so 4- and 6-bit dtypes are counted exactly; checked at every step.
  uint64_t bits = static_cast<uint64_t>(dtype_bits(record.dtype));
  for (const auto& dim : shape) {
    if (!dim.is_number_unsigned()) throw fail(fmt::format("shape entry {} is not a non-negative integer", dim.dump()));
    const uint64_t d = dim.get<uint64_t>();
    if (d > kMaxTensorBytes * 8 || (d != 0 && bits > kMaxTensorBytes * 8 / d))
      throw fail(fmt::format("shape {} is too large (overflows the 2^48-byte limit)", shape.dump()));
    bits *= d;
    record.shape.push_back(static_cast<int64_t>(d));
  }
  if (bits % 8 != 0)
    throw fail(fmt::format("{} elements of {} do not fill whole bytes", bits / dtype_bits(record.dtype), dtype_name(record.dtype)));

  const auto& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
    throw fail(fmt::format("data_offsets {} is not a pair of non-negative integers", offsets.dump()));
  record.begin = offsets[0].get<uint64_t>();
  record.end = offsets[1].get<uint64_t>();
  if (record.begin > record.end) throw fail(fmt::format("data_offsets [{}, {}] end before they begin", record.begin, record.end));
  if (record.end > kMaxTensorBytes) throw fail(fmt::format("data_offsets end {} is beyond the 2^48-byte limit", record.end));
  if (record.end - record.begin != bits / 8)
    throw fail(fmt::format("data_offsets span {} bytes, but {} with shape {} needs {} bytes", record.end - record.begin,
                           dtype_name(record.dtype), shape.dump(), bits / 8));
  return record;
}

}  // namespace

std::string_view dtype_name(SafetensorsDtype dtype) { return kDtypes.at(static_cast<size_t>(dtype)).name; }
int dtype_bits(SafetensorsDtype dtype) { return kDtypes.at(static_cast<size_t>(dtype)).bits; }

std::optional<SafetensorsDtype> dtype_from_name(std::string_view name) {
  for (size_t i = 0; i < kDtypes.size(); ++i)
    if (kDtypes[i].name == name) return static_cast<SafetensorsDtype>(i);
  return std::nullopt;
}

std::string valid_dtype_names() {
  std::vector<std::string_view> names;
  for (const auto& d : kDtypes) names.push_back(d.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, std::string source) {
  SafetensorsFile file;
  file.source_ = std::move(source);
  const std::string& src = file.source_;
  if (bytes.size() < 8)
    throw format_error(src, fmt::format("truncated: {} bytes, shorter than the 8-byte header length", bytes.size()));
  const uint64_t header_len = read_u64_le(bytes.data());
  if (header_len > kMaxSafetensorsHeaderBytes)
    throw format_error(src, fmt::format("header length {} exceeds the limit of {} bytes", header_len, kMaxSafetensorsHeaderBytes));
  if (header_len > bytes.size() - 8)
    throw format_error(src, fmt::format("header length {} runs past the end of the file ({} bytes)", header_len, bytes.size()));
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), header_len);
  if (text.empty() || text.front() != '{') throw format_error(src, "header does not start with '{' (not a JSON object)");
  const nlohmann::json header = parse_header_json(text, src);
  if (!header.is_object()) throw format_error(src, "header is not a JSON object");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw format_error(src, "__metadata__ is not a JSON object");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string())
          throw format_error(src, fmt::format("__metadata__ value of '{}' is not a string ({})", mkey, mvalue.dump()));
        file.metadata_[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    file.tensors_.push_back(parse_entry(key, value, src));
  }

  // Offsets must tile the data section exactly: sorted by position, each tensor begins where
  // the previous one ended, the first at 0 and the last at the end of the file. This rejects
  // holes (which let a file hide other content) and overlaps (aliasing).
  std::vector<const TensorRecord*> by_offset;
  for (const auto& t : file.tensors_) by_offset.push_back(&t);
  std::stable_sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected_begin = 0;
  const TensorRecord* previous = nullptr;
  for (const auto* t : by_offset) {
    if (t->begin < expected_begin)
      throw format_error(src, fmt::format("tensors '{}' and '{}' overlap (bytes {}..{} and {}..{})", previous->name, t->name,
                                          previous->begin, previous->end, t->begin, t->end));
    if (t->begin > expected_begin)
      throw format_error(src, previous ? fmt::format("{} unused bytes between tensors '{}' (ends at {}) and '{}' (begins at {})",
                                                     t->begin - expected_begin, previous->name, expected_begin, t->name, t->begin)
                                       : fmt::format("{} unused bytes before the first tensor '{}'", t->begin, t->name));
    expected_begin = t->end;
    previous = t;
  }
  const uint64_t data_size = bytes.size() - 8 - header_len;
  if (expected_begin > data_size)
    throw format_error(src, fmt::format("truncated: tensor data ends at byte {} of the data section, which has only {} bytes",
                                        expected_begin, data_size));
  if (expected_begin < data_size)
    throw format_error(src, fmt::format("{} trailing bytes after the last tensor", data_size - expected_begin));

  std::sort(file.tensors_.begin(), file.tensors_.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  file.data_start_ = 8 + header_len;
  file.file_ = std::move(bytes);
  return file;
}

SafetensorsFile SafetensorsFile::read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open safetensors file").file(path.string()).hint("check that the path exists and is readable");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  std::vector<uint8_t> bytes(size);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    throw Error("cannot read safetensors file").file(path.string());
  return parse(std::move(bytes), path.string());
}

const TensorRecord* SafetensorsFile::find(std::string_view name) const {
  const auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name, [](const auto& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

const TensorRecord& SafetensorsFile::at(std::string_view name) const {
  if (const auto* t = find(name)) return *t;
  std::vector<std::string_view> names;
  for (const auto& t : tensors_) names.push_back(t.name);
  throw Error(fmt::format("tensor '{}' not found", name))
      .file(source_)
      .expected(fmt::format("one of: {}", names.empty() ? std::string("(file holds no tensors)") : fmt::format("{}", fmt::join(names, ", "))));
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorRecord& record) const {
  return {file_.data() + data_start_ + record.begin, record.end - record.begin};
}

std::vector<uint8_t> serialize_safetensors(const std::vector<TensorBytes>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorBytes*> order;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    DISTILLERY_CHECK(t.name != "__metadata__", Error("'__metadata__' is reserved and cannot name a tensor"));
    DISTILLERY_CHECK(names.insert(t.name).second, Error(fmt::format("duplicate tensor name '{}'", t.name)));
    uint64_t bits = static_cast<uint64_t>(dtype_bits(t.dtype));
    for (auto d : t.shape) {
      DISTILLERY_CHECK(d >= 0, Error(fmt::format("tensor '{}': negative dimension {}", t.name, d)));
      bits *= static_cast<uint64_t>(d);
    }
    DISTILLERY_CHECK(bits % 8 == 0 && bits / 8 == t.data.size(),
                     Error(fmt::format("tensor '{}': {} data bytes do not match {} with {} elements", t.name, t.data.size(),
                                       dtype_name(t.dtype), bits / dtype_bits(t.dtype))));
    order.push_back(&t);
  }
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return dtype_bits(a->dtype) != dtype_bits(b->dtype) ? dtype_bits(a->dtype) > dtype_bits(b->dtype) : a->name < b->name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* t : order) {
    header[t->name] = {{"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<uint8_t> out(8 + text.size() + offset);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  std::copy(text.begin(), text.end(), out.begin() + 8);
  auto cursor = out.begin() + 8 + static_cast<std::ptrdiff_t>(text.size());
  for (const auto* t : order) cursor = std::copy(t->data.begin(), t->data.end(), cursor);
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto bytes = serialize_safetensors(tensors, metadata);
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace distillery
