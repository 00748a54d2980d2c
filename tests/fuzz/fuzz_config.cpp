// Any text, as a config file or as a --set override, must either give values of the declared
// types inside their declared ranges, or be rejected with distillery::Error; anything else (a
// crash, a sanitizer report, yaml-cpp's or nlohmann's own exceptions) is a bug.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/config.h"
#include "core/error.h"

namespace {

using distillery::ConfigField;
using distillery::ConfigSchema;
using distillery::ConfigType;
using distillery::NumberRange;

// One key of every type, nested and not, with choices and ranges, as programs declare them.
const ConfigSchema& schema() {
  static const ConfigSchema s = [] {
    ConfigSchema s;
    s.add({"flag", ConfigType::Bool, "", "false"});
    s.add({"train.steps", ConfigType::Int, "", "10"}, NumberRange::at_least(1));
    s.add({"train.lr", ConfigType::Float, "", "1e-3"}, NumberRange::above(0));
    s.add({"offset", ConfigType::Float, "", "0"});
    s.add({"kind", ConfigType::String, "", "a", false, {"a", "b"}});
    s.add({"name", ConfigType::String, ""});
    s.add({"model.sizes", ConfigType::IntList, "", "[1, 2]"}, NumberRange::between(1, 64));
    s.add({"model.range", ConfigType::FloatList, "", "[0, 1]"}, NumberRange::between(0, 1));
    s.add({"taps", ConfigType::StringList, "", "[a]"});
    s.add({"means", ConfigType::FloatMatrix, "", "[[0]]"});
    return s;
  }();
  return s;
}

void check(const distillery::Config& c) {
  const auto in_range = [](const ConfigField& field, double value) {
    if (!std::isfinite(value) || (field.range && !field.range->contains(value))) std::abort();
  };
  for (const auto& field : schema().fields()) {
    if (!c.has(field.key)) continue;
    switch (field.type) {
      case ConfigType::Bool: c.get_bool(field.key); break;
      case ConfigType::Int: in_range(field, static_cast<double>(c.get_int(field.key))); break;
      case ConfigType::Float: in_range(field, c.get_float(field.key)); break;
      case ConfigType::String: {
        const auto value = c.get_string(field.key);
        if (!field.choices.empty() && value != "a" && value != "b") std::abort();
        break;
      }
      case ConfigType::IntList: for (const auto v : c.get_int_list(field.key)) in_range(field, static_cast<double>(v)); break;
      case ConfigType::FloatList: for (const auto v : c.get_float_list(field.key)) in_range(field, v); break;
      case ConfigType::StringList: c.get_string_list(field.key); break;
      case ConfigType::FloatMatrix:
        for (const auto& row : c.get_float_matrix(field.key))
          for (const auto v : row) in_range(field, v);
        break;
    }
  }
  c.to_json();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    check(distillery::Config::parse(schema(), text, "fuzz.yaml"));
  } catch (const distillery::Error&) {
  }
  try {
    check(distillery::Config::parse(schema(), "name: x\n", "fuzz.yaml", {text}));
  } catch (const distillery::Error&) {
  }
  return 0;
}
