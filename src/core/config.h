// defines: ConfigType, NumberRange, ConfigField, ConfigSchema, Config, closest_match
// YAML configuration checked against a schema: every key a program accepts is declared once,
// with its type, default, help and, for numbers, the range it may take. Unknown keys are
// errors suggesting the closest valid key, wrong types and values out of range name the key,
// the value and what was expected, and `--set a.b=c` overrides go through the same checks. The resolved config (defaults filled in) is what every output
// directory's config.json holds (to_json).
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distillery {

enum class ConfigType { Bool, Int, Float, String, IntList, FloatList, StringList, FloatMatrix };
std::string_view config_type_name(ConfigType type);

// The values a numeric key, or each number of a list key, may take. A number from a config is
// finite whatever its range: YAML spells nan and inf (.nan, .inf), and neither is a setting.
struct NumberRange {
  double low = -std::numeric_limits<double>::infinity();
  double high = std::numeric_limits<double>::infinity();
  bool low_open = false;   // low itself is outside the range
  bool high_open = false;

  static NumberRange at_least(double low) { return {low}; }
  static NumberRange above(double low) { return {low, std::numeric_limits<double>::infinity(), true}; }
  static NumberRange between(double low, double high) { return {low, high}; }
  static NumberRange from_below(double low, double high) { return {low, high, false, true}; }  // [low, high)
  bool contains(double value) const;
  std::string describe() const;  // "a number > 0", "an integer in [1, 4096]"
};

struct ConfigField {
  std::string key;                               // dotted path, e.g. "optimizer.lr"
  ConfigType type = ConfigType::String;
  std::string help;
  std::optional<std::string> default_yaml = {};  // YAML text of the default; none = no default
  bool required = false;
  std::vector<std::string> choices = {};         // for String fields: the valid values
  std::optional<NumberRange> range = {};         // for numeric fields
};

class ConfigSchema {
 public:
  ConfigSchema& add(ConfigField field);
  ConfigSchema& add(ConfigField field, NumberRange range);
  // A shared group of keys (the trainer's) with a program's own defaults.
  ConfigSchema& set_default(std::string_view key, std::string default_yaml);
  const ConfigField* find(std::string_view key) const;
  const std::vector<ConfigField>& fields() const { return fields_; }
  bool is_prefix(std::string_view prefix) const;  // some key starts with "prefix."

 private:
  std::vector<ConfigField> fields_;
};

class Config {
 public:
  // `source` names the text in errors (a file path, or "--set").
  static Config parse(const ConfigSchema& schema, std::string_view yaml_text, const std::string& source,
                      const std::vector<std::string>& overrides = {});
  static Config load(const ConfigSchema& schema, const std::filesystem::path& yaml_file,
                     const std::vector<std::string>& overrides = {});
  // A top-level string key read before the schema is known, with the overrides applied: the
  // key that chooses the schema (a distillation recipe's `method`). nullopt when not given.
  static std::optional<std::string> peek_string(const std::filesystem::path& yaml_file, const std::vector<std::string>& overrides,
                                                std::string_view key);

  bool has(std::string_view key) const;
  bool is_set(std::string_view key) const;  // given explicitly rather than defaulted
  bool get_bool(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  std::vector<int64_t> get_int_list(std::string_view key) const;
  std::vector<double> get_float_list(std::string_view key) const;
  std::vector<std::string> get_string_list(std::string_view key) const;
  std::vector<std::vector<double>> get_float_matrix(std::string_view key) const;

  std::string source() const;
  // Nested JSON of every set or defaulted key (what a run directory's config.json holds).
  std::string to_json(int indent = 2) const;
  // Nested JSON of the keys given explicitly (in the text or by --set) that `schema` declares:
  // the text of a config for another schema (a method that runs another method's steps).
  std::string explicit_json(const ConfigSchema& schema) const;
  std::vector<std::string> explicit_keys() const;  // given in the text or by --set, in key order

  struct Values;

 private:
  std::shared_ptr<const Values> values_;
};

// The candidate nearest to `word` by edit distance, if it is near enough to be a likely typo.
std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace distillery
