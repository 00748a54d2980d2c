#include "cli/number_checks.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>

namespace distillery {

namespace {

CLI::Validator whole_number_check(uint64_t low, uint64_t high) {
  const auto range = fmt::format("a whole number from {} to {}", low, high);
  return CLI::Validator(
      [low, high, range](std::string& text) -> std::string {
        uint64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (error == std::errc() && end == text.data() + text.size() && value >= low && value <= high) return {};
        return fmt::format("expected {}, got '{}'", range, text);
      },
      fmt::format("INT in [{}, {}]", low, high));
}

}  // namespace

CLI::Validator count_check() { return whole_number_check(1, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())); }
CLI::Validator seed_check() { return whole_number_check(0, std::numeric_limits<uint64_t>::max()); }

namespace {
CLI::Validator finite_check(const char* what, const char* name, bool (*accepts)(double)) {
  return CLI::Validator(
      [what, accepts](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (!text.empty() && end == text.c_str() + text.size() && std::isfinite(value) && accepts(value)) return {};
        return fmt::format("expected {}, got '{}'", what, text);
      },
      name);
}
}  // namespace

CLI::Validator finite_number_check() { return finite_check("a finite number", "FINITE", [](double) { return true; }); }
CLI::Validator positive_number_check() { return finite_check("a finite number > 0", "FINITE > 0", [](double v) { return v > 0; }); }
CLI::Validator non_negative_number_check() { return finite_check("a finite number ≥ 0", "FINITE ≥ 0", [](double v) { return v >= 0; }); }

}  // namespace distillery
