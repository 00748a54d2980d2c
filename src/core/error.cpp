#include "core/error.h"

namespace distillery {

Error::Error(std::string message, SourceLocation where)
    : std::runtime_error(message), message_(std::move(message)), origin_(where) {
  refresh();
}

Error& Error::file(std::string path) { file_ = std::move(path); refresh(); return *this; }
Error& Error::field(std::string name) { field_ = std::move(name); refresh(); return *this; }
Error& Error::expected(std::string what) { expected_ = std::move(what); refresh(); return *this; }
Error& Error::got(std::string what) { got_ = std::move(what); refresh(); return *this; }
Error& Error::hint(std::string text) { hint_ = std::move(text); refresh(); return *this; }

std::string Error::describe(bool with_origin) const {
  std::string out = message_;
  auto line = [&out](const char* label, const std::string& value) {
    if (!value.empty()) out += std::string("\n  ") + label + ": " + value;
  };
  line("file", file_);
  line("field", field_);
  line("expected", expected_);
  line("got", got_);
  line("hint", hint_);
  if (with_origin)
    line("raised at", std::string(origin_.file) + ":" + std::to_string(origin_.line));
  return out;
}

}  // namespace distillery
