// defines: library_text
// What a library's exception says, without the tag some put first ("[json.exception.
// parse_error.101] "): the rest is the part a user can read in an error of ours. Bytes outside
// ASCII are written as \xNN: libraries quote the input they stopped at, which may not be text.
#pragma once

#include <string>
#include <string_view>

namespace distillery {

inline std::string library_text(std::string_view what) {
  if (what.starts_with('[')) {
    const auto end = what.find("] ");
    if (end != std::string_view::npos) what.remove_prefix(end + 2);
  }
  std::string text;
  for (const char c : what) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x80) {
      text += c;
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      text += {'\\', 'x', kHex[byte >> 4], kHex[byte & 15]};
    }
  }
  return text;
}

}  // namespace distillery
