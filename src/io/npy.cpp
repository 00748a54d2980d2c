#include "io/npy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <charconv>

#include "core/error.h"

namespace distillery {

namespace {

struct TypeName {
  NpyType type;
  std::string_view descr;
  size_t size;
};
// numpy writes '|u1' for bytes; '<u1' means the same.
constexpr std::array<TypeName, 5> kTypes = {{{NpyType::Float64, "<f8", 8},
                                             {NpyType::Float32, "<f4", 4},
                                             {NpyType::Int64, "<i8", 8},
                                             {NpyType::UInt8, "|u1", 1},
                                             {NpyType::UInt8, "<u1", 1}}};
constexpr int64_t kMaxElements = int64_t{1} << 40;

size_t skip_spaces(std::string_view text, size_t pos) {
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n')) ++pos;
  return pos;
}

// The position of the value of `'key':` in the header dict, or npos.
size_t value_of(std::string_view header, std::string_view key) {
  const std::string quoted = fmt::format("'{}'", key);
  const auto at = header.find(quoted);
  if (at == std::string_view::npos) return at;
  const auto colon = skip_spaces(header, at + quoted.size());
  if (colon >= header.size() || header[colon] != ':') return std::string_view::npos;
  return skip_spaces(header, colon + 1);
}

}  // namespace

size_t npy_item_size(NpyType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t.size;
  return 0;
}

NpyLayout parse_npy(std::string_view bytes, const std::string& where) {
  const auto fail = [&](const std::string& what) { return Error("malformed .npy member: " + what).file(where); };
  DISTILLERY_CHECK(bytes.size() >= 10 && bytes.substr(0, 6) == "\x93NUMPY", fail("no .npy magic").expected("\\x93NUMPY"));
  const auto major = static_cast<unsigned char>(bytes[6]);
  DISTILLERY_CHECK(major >= 1 && major <= 3, fail(fmt::format("unsupported .npy version {}", major)).expected("1, 2 or 3"));
  const size_t length_bytes = major == 1 ? 2 : 4, offset = 8 + length_bytes;
  DISTILLERY_CHECK(bytes.size() >= offset, fail("truncated header"));
  size_t header_length = 0;
  for (size_t i = length_bytes; i-- > 0;) header_length = (header_length << 8) | static_cast<unsigned char>(bytes[8 + i]);
  DISTILLERY_CHECK(header_length <= bytes.size() - offset, fail("header runs past the end of the member"));
  const auto header = bytes.substr(offset, header_length);
  const auto shown = std::string(header.substr(0, 200));

  auto pos = value_of(header, "descr");
  DISTILLERY_CHECK(pos < header.size() && header[pos] == '\'', fail("header has no 'descr'").got(shown));
  const auto descr_end = header.find('\'', pos + 1);
  DISTILLERY_CHECK(descr_end != std::string_view::npos, fail("header's 'descr' is not a closed string").got(shown));
  const auto descr = header.substr(pos + 1, descr_end - pos - 1);
  const TypeName* type = nullptr;
  for (const auto& t : kTypes)
    if (t.descr == descr) type = &t;
  DISTILLERY_CHECK(type, fail(fmt::format("unsupported dtype '{}'", descr)).expected("little-endian float64, float32, int64 or uint8"));

  pos = value_of(header, "fortran_order");
  DISTILLERY_CHECK(pos < header.size() && (header.substr(pos, 4) == "True" || header.substr(pos, 5) == "False"),
                   fail("header has no 'fortran_order'").got(shown));
  DISTILLERY_CHECK(header.substr(pos, 5) == "False", fail("Fortran-ordered arrays are not supported").expected("C order (fortran_order False)"));

  pos = value_of(header, "shape");
  DISTILLERY_CHECK(pos < header.size() && header[pos] == '(', fail("header has no 'shape' tuple").got(shown));
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (pos = skip_spaces(header, pos + 1);;) {
    DISTILLERY_CHECK(pos < header.size(), fail("header's 'shape' is not closed").got(shown));
    if (header[pos] == ')') break;
    int64_t dim = 0;
    const auto [end, error] = std::from_chars(header.data() + pos, header.data() + header.size(), dim);
    DISTILLERY_CHECK(error == std::errc() && dim >= 0, fail("header's 'shape' holds something other than sizes").expected("(d0, d1, ...)").got(shown));
    DISTILLERY_CHECK(dim <= kMaxElements / std::max<int64_t>(count, 1), fail("shape is implausibly large").got(shown));
    shape.push_back(dim);
    count *= dim;
    pos = skip_spaces(header, static_cast<size_t>(end - header.data()));
    if (pos < header.size() && header[pos] == ',') pos = skip_spaces(header, pos + 1);
    else DISTILLERY_CHECK(pos < header.size() && header[pos] == ')', fail("header's 'shape' is not a tuple of sizes").got(shown));
  }

  const size_t data_offset = offset + header_length, data_bytes = static_cast<size_t>(count) * type->size;
  DISTILLERY_CHECK(bytes.size() - data_offset == data_bytes,
                   fail("data size does not match the shape")
                       .expected(fmt::format("{} bytes for shape ({}) of {}", data_bytes, fmt::join(shape, ", "), descr))
                       .got(fmt::format("{} bytes", bytes.size() - data_offset)));
  return {type->type, std::move(shape), data_offset, data_bytes};
}

std::string npy_preamble(NpyType type, const std::vector<int64_t>& shape) {
  std::string_view descr;
  for (const auto& t : kTypes)
    if (t.type == type && descr.empty()) descr = t.descr;
  // numpy's spelling: "(2048,)" for one dimension, "(3, 4)" for more.
  std::string dims = fmt::format("{}", fmt::join(shape, ", "));
  if (shape.size() == 1) dims += ",";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, dims);
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header;
}

}  // namespace distillery
