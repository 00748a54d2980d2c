// defines: distillery::Error, DISTILLERY_CHECK
// The one user-facing error type: a message plus what the user needs to fix it
// (the file, the field, what was expected, what was found, and a hint).
#pragma once

#include <stdexcept>
#include <string>

namespace distillery {

// Where an Error was raised. std::source_location needs a compiler builtin clang 14 lacks;
// __builtin_FILE/__builtin_LINE as default arguments work in both GCC and clang.
struct SourceLocation {
  const char* file = "";
  unsigned line = 0;
  static constexpr SourceLocation current(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    return {file, line};
  }
};

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message,
                 SourceLocation where = SourceLocation::current());

  // Builder-style context; each returns *this so a throw site reads as one statement.
  Error& file(std::string path);
  Error& field(std::string name);
  Error& expected(std::string what);
  Error& got(std::string what);
  Error& hint(std::string text);

  const std::string& message() const { return message_; }
  const std::string& file() const { return file_; }
  const std::string& field() const { return field_; }
  const std::string& hint() const { return hint_; }
  // Where in our sources it was raised; shown only with --verbose.
  const SourceLocation& origin() const { return origin_; }

  // "message\n  file: …\n  field: …\n  expected: …\n  got: …\n  hint: …" (empty parts omitted).
  std::string describe(bool with_origin = false) const;
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  void refresh() { what_ = describe(); }

  std::string message_, file_, field_, expected_, got_, hint_;
  SourceLocation origin_;
  std::string what_;
};

}  // namespace distillery

// Throws distillery::Error(msg) when cond is false; msg may be any expression
// yielding an Error or a string. Unlike assert, it stays in release builds.
#define DISTILLERY_CHECK(cond, ...)                      \
  do {                                                   \
    if (!(cond)) throw ::distillery::Error(__VA_ARGS__); \
  } while (0)
