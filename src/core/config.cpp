#include "core/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"

namespace distillery {

using nlohmann::json;

struct Config::Values {
  std::string source;
  const ConfigSchema* schema_for_errors = nullptr;
  std::map<std::string, json, std::less<>> by_key;
  std::set<std::string, std::less<>> set_keys;  // given in the text or by --set, not defaulted
  std::map<std::string, ConfigType, std::less<>> types;
};

namespace {

std::string yaml_text(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

Error type_error(const std::string& source, const ConfigField& field, const YAML::Node& value) {
  return Error(fmt::format("config key '{}' has the wrong type", field.key))
      .file(source)
      .field(field.key)
      .expected(std::string(config_type_name(field.type)))
      .got(yaml_text(value));
}

// Resolved configs are written as JSON, which holds text only as UTF-8.
bool is_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 0;
    if (length == 0 || i + length > text.size()) return false;
    uint32_t code = length == 1 ? lead : lead & (0x7f >> length);
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next >> 6) != 0x2) return false;
      code = code << 6 | (next & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and values past Unicode's range are not UTF-8.
    const uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < smallest[length] || (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) return false;
    i += length;
  }
  return true;
}

bool is_integer(ConfigType type) { return type == ConfigType::Int || type == ConfigType::IntList; }

template <typename T>
T scalar_as(const std::string& source, const ConfigField& field, const YAML::Node& node) {
  if (!node.IsScalar()) throw type_error(source, field, node);
  T value;
  try {
    value = node.as<T>();
  } catch (const YAML::Exception&) {
    throw type_error(source, field, node);
  }
  if constexpr (std::is_same_v<T, std::string>) {
    if (!is_utf8(value)) throw Error(fmt::format("config key '{}' is not UTF-8 text", field.key)).file(source).field(field.key).expected("UTF-8 text");
  }
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    const auto range = field.range.value_or(NumberRange{});
    if (!std::isfinite(static_cast<double>(value)) || !range.contains(static_cast<double>(value))) {
      const auto expected = field.range ? range.describe() : std::string(is_integer(field.type) ? "an integer" : "a finite number");
      throw Error(fmt::format("config key '{}' is out of range", field.key)).file(source).field(field.key).expected(expected).got(node.Scalar());
    }
  }
  return value;
}

template <typename T>
json sequence_as(const std::string& source, const ConfigField& field, const YAML::Node& node) {
  if (!node.IsSequence()) throw type_error(source, field, node);
  json out = json::array();
  for (const auto& item : node) out.push_back(scalar_as<T>(source, field, item));
  return out;
}

json convert(const std::string& source, const ConfigField& field, const YAML::Node& node) {
  switch (field.type) {
    case ConfigType::Bool: return scalar_as<bool>(source, field, node);
    case ConfigType::Int: return scalar_as<int64_t>(source, field, node);
    case ConfigType::Float: return scalar_as<double>(source, field, node);
    case ConfigType::String: {
      auto value = scalar_as<std::string>(source, field, node);
      if (!field.choices.empty() && std::find(field.choices.begin(), field.choices.end(), value) == field.choices.end()) {
        auto error = Error(fmt::format("config key '{}' has an invalid value", field.key))
                         .file(source)
                         .field(field.key)
                         .expected(fmt::format("one of: {}", fmt::join(field.choices, ", ")))
                         .got(value);
        if (auto near = closest_match(value, field.choices)) error.hint(fmt::format("did you mean '{}'?", *near));
        throw error;
      }
      return value;
    }
    case ConfigType::IntList: return sequence_as<int64_t>(source, field, node);
    case ConfigType::FloatList: return sequence_as<double>(source, field, node);
    case ConfigType::StringList: return sequence_as<std::string>(source, field, node);
    case ConfigType::FloatMatrix: {
      if (!node.IsSequence()) throw type_error(source, field, node);
      json out = json::array();
      for (const auto& row : node) out.push_back(sequence_as<double>(source, field, row));
      return out;
    }
  }
  throw Error("unhandled config type");
}

Error unknown_key(const std::string& source, const ConfigSchema& schema, const std::string& key) {
  std::vector<std::string> keys;
  for (const auto& f : schema.fields()) keys.push_back(f.key);
  auto error = Error(fmt::format("unknown config key '{}'", key))
                   .file(source)
                   .field(key)
                   .expected(fmt::format("one of: {}", fmt::join(keys, ", ")));
  if (auto near = closest_match(key, keys)) error.hint(fmt::format("did you mean '{}'?", *near));
  return error;
}

// Walks a YAML mapping; nested maps are descended until a declared key is reached.
void collect(const std::string& source, const ConfigSchema& schema, const YAML::Node& map, const std::string& prefix,
             std::map<std::string, json, std::less<>>& out) {
  std::set<std::string> seen;  // yaml-cpp keeps both of a repeated key, and either could win
  for (const auto& item : map) {
    DISTILLERY_CHECK(item.first.IsScalar(), Error("a config key must be a plain name").file(source).expected("key: value")
                                                .got(yaml_text(item.first)).hint(prefix.empty() ? "" : "under " + prefix));
    const auto name = item.first.Scalar();
    const auto key = prefix.empty() ? name : prefix + "." + name;
    DISTILLERY_CHECK(seen.insert(name).second, Error(fmt::format("config key '{}' is given twice", key)).file(source).field(key)
                                                   .hint("keep one of them"));
    if (const auto* field = schema.find(key)) {
      out[key] = convert(source, *field, item.second);
    } else if (item.second.IsMap() && schema.is_prefix(key)) {
      collect(source, schema, item.second, key, out);
    } else {
      throw unknown_key(source, schema, key);
    }
  }
}

YAML::Node parse_yaml(std::string_view text, const std::string& source) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("invalid YAML at line {}, column {}: {}", e.mark.line + 1, e.mark.column + 1, e.msg)).file(source);
  }
}

}  // namespace

std::string_view config_type_name(ConfigType type) {
  switch (type) {
    case ConfigType::Bool: return "bool (true/false)";
    case ConfigType::Int: return "integer";
    case ConfigType::Float: return "number";
    case ConfigType::String: return "string";
    case ConfigType::IntList: return "list of integers";
    case ConfigType::FloatList: return "list of numbers";
    case ConfigType::StringList: return "list of strings";
    case ConfigType::FloatMatrix: return "list of lists of numbers";
  }
  return "?";
}

bool NumberRange::contains(double value) const {
  return (low_open ? value > low : value >= low) && (high_open ? value < high : value <= high);
}

std::string NumberRange::describe() const {
  const bool bounded_below = std::isfinite(low), bounded_above = std::isfinite(high);
  if (bounded_below && bounded_above)
    return fmt::format("a number in {}{}, {}{}", low_open ? "(" : "[", low, high, high_open ? ")" : "]");
  if (bounded_below) return fmt::format("a number {} {}", low_open ? ">" : "≥", low);
  if (bounded_above) return fmt::format("a number {} {}", high_open ? "<" : "≤", high);
  return "a finite number";
}

ConfigSchema& ConfigSchema::add(ConfigField field, NumberRange range) {
  field.range = range;
  return add(std::move(field));
}

ConfigSchema& ConfigSchema::add(ConfigField field) {
  DISTILLERY_CHECK(!find(field.key), Error(fmt::format("config key '{}' declared twice", field.key)));
  fields_.push_back(std::move(field));
  return *this;
}

ConfigSchema& ConfigSchema::set_default(std::string_view key, std::string default_yaml) {
  const auto field = std::find_if(fields_.begin(), fields_.end(), [&](const ConfigField& f) { return f.key == key; });
  DISTILLERY_CHECK(field != fields_.end(), Error(fmt::format("default for undeclared config key '{}'", key)));
  field->default_yaml = std::move(default_yaml);
  return *this;
}

const ConfigField* ConfigSchema::find(std::string_view key) const {
  for (const auto& f : fields_)
    if (f.key == key) return &f;
  return nullptr;
}

bool ConfigSchema::is_prefix(std::string_view prefix) const {
  return std::any_of(fields_.begin(), fields_.end(), [&](const auto& f) {
    return f.key.size() > prefix.size() && f.key.compare(0, prefix.size(), prefix) == 0 && f.key[prefix.size()] == '.';
  });
}

Config Config::parse(const ConfigSchema& schema, std::string_view yaml_text, const std::string& source,
                     const std::vector<std::string>& overrides) {
  auto values = std::make_shared<Values>();
  values->source = source;
  const YAML::Node root = parse_yaml(yaml_text, source);
  if (root.IsMap()) {
    collect(source, schema, root, "", values->by_key);
  } else if (!root.IsNull()) {
    throw Error("a config file must be a YAML mapping of keys to values").file(source).got(std::string(yaml_text.substr(0, 80)));
  }

  for (const auto& assignment : overrides) {
    const auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(fmt::format("bad override '{}'", assignment)).field("--set").expected("key=value, e.g. --set optimizer.lr=1e-4");
    const std::string key = assignment.substr(0, eq);
    const auto* field = schema.find(key);
    if (!field) throw unknown_key("--set " + assignment, schema, key);
    const YAML::Node value = parse_yaml(std::string_view(assignment).substr(eq + 1), "--set " + assignment);
    values->by_key[key] = convert("--set " + assignment, *field, value);
  }

  for (const auto& [key, value] : values->by_key) values->set_keys.insert(key);
  for (const auto& field : schema.fields()) {
    values->types[field.key] = field.type;
    if (values->by_key.count(field.key)) continue;
    if (field.default_yaml) {
      values->by_key[field.key] = convert("default of " + field.key, field, parse_yaml(*field.default_yaml, field.key));
    } else if (field.required) {
      throw Error(fmt::format("missing required config key '{}'", field.key))
          .file(source)
          .field(field.key)
          .expected(fmt::format("{}: {}", config_type_name(field.type), field.help));
    }
  }
  Config config;
  config.values_ = std::move(values);
  return config;
}

namespace {
std::string read_config_file(const std::filesystem::path& yaml_file) {
  std::ifstream in(yaml_file);
  if (!in) throw Error("cannot open config file").file(yaml_file.string()).hint("check the path");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}
}  // namespace

Config Config::load(const ConfigSchema& schema, const std::filesystem::path& yaml_file, const std::vector<std::string>& overrides) {
  return parse(schema, read_config_file(yaml_file), yaml_file.string(), overrides);
}

std::optional<std::string> Config::peek_string(const std::filesystem::path& yaml_file, const std::vector<std::string>& overrides, std::string_view key) {
  const auto source = yaml_file.string();
  const YAML::Node root = parse_yaml(read_config_file(yaml_file), source);
  std::optional<std::string> value;
  const auto scalar = [&](const YAML::Node& node, const std::string& where) {
    DISTILLERY_CHECK(node.IsScalar(), Error(fmt::format("config key '{}' has the wrong type", key)).file(where).field(std::string(key))
                                          .expected("string").got(yaml_text(node)));
    return node.as<std::string>();
  };
  if (root.IsMap() && root[std::string(key)]) value = scalar(root[std::string(key)], source);
  const auto prefix = std::string(key) + "=";
  for (const auto& assignment : overrides)
    if (assignment.starts_with(prefix)) value = scalar(parse_yaml(assignment.substr(prefix.size()), "--set " + assignment), "--set " + assignment);
  return value;
}

namespace {
const json& lookup(const Config::Values& values, std::string_view key, ConfigType type) {
  const auto type_it = values.types.find(key);
  DISTILLERY_CHECK(type_it != values.types.end(), Error(fmt::format("config key '{}' is not declared", key)).file(values.source));
  DISTILLERY_CHECK(type_it->second == type,
                   Error(fmt::format("config key '{}' is read as {} but declared as {}", key, config_type_name(type),
                                     config_type_name(type_it->second))));
  const auto it = values.by_key.find(key);
  DISTILLERY_CHECK(it != values.by_key.end(),
                   Error(fmt::format("config key '{}' is not set and has no default", key)).file(values.source).field(std::string(key)));
  return it->second;
}
}  // namespace

bool Config::has(std::string_view key) const { return values_->by_key.count(key) > 0; }
bool Config::is_set(std::string_view key) const { return values_->set_keys.count(key) > 0; }
bool Config::get_bool(std::string_view key) const { return lookup(*values_, key, ConfigType::Bool).get<bool>(); }
int64_t Config::get_int(std::string_view key) const { return lookup(*values_, key, ConfigType::Int).get<int64_t>(); }
double Config::get_float(std::string_view key) const { return lookup(*values_, key, ConfigType::Float).get<double>(); }
std::string Config::get_string(std::string_view key) const { return lookup(*values_, key, ConfigType::String).get<std::string>(); }
std::vector<int64_t> Config::get_int_list(std::string_view key) const {
  return lookup(*values_, key, ConfigType::IntList).get<std::vector<int64_t>>();
}
std::vector<double> Config::get_float_list(std::string_view key) const {
  return lookup(*values_, key, ConfigType::FloatList).get<std::vector<double>>();
}
std::vector<std::string> Config::get_string_list(std::string_view key) const {
  return lookup(*values_, key, ConfigType::StringList).get<std::vector<std::string>>();
}
std::vector<std::vector<double>> Config::get_float_matrix(std::string_view key) const {
  return lookup(*values_, key, ConfigType::FloatMatrix).get<std::vector<std::vector<double>>>();
}
std::string Config::source() const { return values_->source; }

namespace {
void put_nested(json& root, const std::string& key, const json& value) {
  std::string pointer = "/" + key;
  std::replace(pointer.begin(), pointer.end(), '.', '/');
  root[json::json_pointer(pointer)] = value;
}
}  // namespace

std::string Config::to_json(int indent) const {
  json root = json::object();
  for (const auto& [key, value] : values_->by_key) put_nested(root, key, value);
  return root.dump(indent);
}

std::vector<std::string> Config::explicit_keys() const { return {values_->set_keys.begin(), values_->set_keys.end()}; }

std::string Config::explicit_json(const ConfigSchema& schema) const {
  json root = json::object();
  for (const auto& key : values_->set_keys)
    if (schema.find(key)) put_nested(root, key, values_->by_key.at(key));
  return root.dump();
}

std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t substitution = diagonal + (a[i - 1] != b[j - 1]);
        diagonal = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitution});
      }
    }
    return row[b.size()];
  };
  std::optional<std::string> best;
  size_t best_distance = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t d = distance(word, c);
    if (d < best_distance) best_distance = d, best = c;
  }
  // A typo changes a few characters; beyond that the suggestion would be noise.
  if (best && best_distance <= std::max<size_t>(2, word.size() / 3)) return best;
  return std::nullopt;
}

}  // namespace distillery
