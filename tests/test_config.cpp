// Config: schema-checked YAML with overrides; each kind of mistake gets its own error.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "test_support.h"

namespace distillery {
namespace {

ConfigSchema training_schema() {
  ConfigSchema s;
  s.add({"optimizer.lr", ConfigType::Float, "learning rate", "1e-4"}, NumberRange::above(0));
  s.add({"optimizer.betas", ConfigType::FloatList, "Adam betas", "[0.9, 0.999]"}, NumberRange::from_below(0, 1));
  s.add({"batch_size", ConfigType::Int, "images per step", "64"}, NumberRange::between(1, 4096));
  s.add({"offset", ConfigType::Float, "any finite number", "0"});
  s.add({"ema.enabled", ConfigType::Bool, "keep an EMA", "true"});
  s.add({"method", ConfigType::String, "distillation method", "dmd2", false, {"dmd2", "consistency", "reflow"}});
  s.add({"name", ConfigType::String, "run name", {}, true});
  return s;
}

Error error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    Config::parse(training_schema(), yaml, "run.yaml", overrides);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected an error for:\n" << yaml;
  return Error("none");
}

TEST(Config, ValuesDefaultsAndOverrides) {
  const auto config = Config::parse(training_schema(), "name: fmnist\noptimizer:\n  lr: 2e-4\n", "run.yaml",
                                    {"batch_size=128", "ema.enabled=false", "optimizer.betas=[0.5, 0.99]"});
  EXPECT_EQ(config.get_string("name"), "fmnist");
  EXPECT_DOUBLE_EQ(config.get_float("optimizer.lr"), 2e-4);
  EXPECT_EQ(config.get_int("batch_size"), 128);
  EXPECT_FALSE(config.get_bool("ema.enabled"));
  EXPECT_EQ(config.get_float_list("optimizer.betas"), (std::vector<double>{0.5, 0.99}));
  EXPECT_EQ(config.get_string("method"), "dmd2");

  const auto json = nlohmann::json::parse(config.to_json());
  EXPECT_EQ(json["optimizer"]["lr"].get<double>(), 2e-4);
  EXPECT_EQ(json["batch_size"].get<int>(), 128);
  EXPECT_EQ(json["method"].get<std::string>(), "dmd2");
}

TEST(Config, AProgramCanChangeTheDefaultsOfSharedKeys) {
  auto schema = training_schema();
  schema.set_default("batch_size", "256");
  EXPECT_EQ(Config::parse(schema, "name: x", "run.yaml").get_int("batch_size"), 256);
  EXPECT_EQ(Config::parse(schema, "name: x\nbatch_size: 8", "run.yaml").get_int("batch_size"), 8);
  testing::expect_error_mentioning<Error>([&] { schema.set_default("batch", "1"); }, {"default for undeclared config key 'batch'"});
}

TEST(Config, ResolvedConfigIsJsonWithTheDefaultsFilledIn) {
  const auto json = nlohmann::json::parse(Config::parse(training_schema(), "name: x", "run.yaml").to_json());
  EXPECT_EQ(json["name"], "x");
  EXPECT_EQ(json["ema"]["enabled"], true);
}

TEST(Config, UnknownKeySuggestsTheClosest) {
  const auto e = error_of("name: x\noptimizer:\n  lrr: 0.1\n");
  EXPECT_EQ(e.message(), "unknown config key 'optimizer.lrr'");
  EXPECT_EQ(e.file(), "run.yaml");
  EXPECT_EQ(e.hint(), "did you mean 'optimizer.lr'?");
  const auto top = error_of("name: x\nbatchsize: 3\n");
  EXPECT_EQ(top.hint(), "did you mean 'batch_size'?");
}

TEST(Config, UnknownOverrideKeySuggestsTheClosest) {
  const auto e = error_of("name: x", {"optimiser.lr=0.1"});
  EXPECT_EQ(e.message(), "unknown config key 'optimiser.lr'");
  EXPECT_EQ(e.hint(), "did you mean 'optimizer.lr'?");
}

// config.json holds the resolved config as JSON, which is UTF-8: other bytes are refused where
// they are read, not when the run directory is written.
TEST(Config, TextMustBeUtf8) {
  for (const std::string bad : {"\xff\xfe", "a\xc3", "\xc0\xaf", "\xed\xa0\x80"}) {
    const auto e = error_of("name: \"" + bad + "\"\n");
    EXPECT_EQ(e.message(), "config key 'name' is not UTF-8 text") << bad;
  }
  const auto config = Config::parse(training_schema(), "name: \"σ-schedule ✓ 𝔼\"\n", "run.yaml");
  EXPECT_EQ(config.get_string("name"), "σ-schedule ✓ 𝔼");
  EXPECT_NE(config.to_json().find("σ-schedule ✓ 𝔼"), std::string::npos);
}

TEST(Config, WrongTypeNamesKeyValueAndExpectedType) {
  const auto e = error_of("name: x\nbatch_size: lots\n");
  EXPECT_EQ(e.message(), "config key 'batch_size' has the wrong type");
  EXPECT_EQ(e.field(), "batch_size");
  EXPECT_NE(std::string(e.what()).find("expected: integer"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("got: lots"), std::string::npos) << e.what();

  const auto fractional = error_of("name: x\nbatch_size: 1.5\n");
  EXPECT_NE(std::string(fractional.what()).find("got: 1.5"), std::string::npos);
  const auto list = error_of("name: x", {"optimizer.betas=0.9"});
  EXPECT_NE(std::string(list.what()).find("expected: list of numbers"), std::string::npos) << list.what();
}

TEST(Config, NumbersOutOfTheirRangeNameTheKeyTheRangeAndTheValue) {
  struct Case {
    std::string yaml;
    std::vector<std::string> overrides;
    std::string key, expected, got;
  };
  const std::vector<Case> cases = {
      {"name: x\noptimizer:\n  lr: -1e-4\n", {}, "optimizer.lr", "a number > 0", "-1e-4"},
      {"name: x\noptimizer:\n  lr: 0\n", {}, "optimizer.lr", "a number > 0", "0"},
      {"name: x\noptimizer:\n  lr: .nan\n", {}, "optimizer.lr", "a number > 0", ".nan"},
      {"name: x\noptimizer:\n  lr: .inf\n", {}, "optimizer.lr", "a number > 0", ".inf"},
      {"name: x\noptimizer:\n  betas: [0.9, 1.0]\n", {}, "optimizer.betas", "a number in [0, 1)", "1.0"},
      {"name: x\n", {"batch_size=0"}, "batch_size", "a number in [1, 4096]", "0"},
      {"name: x\n", {"batch_size=100000"}, "batch_size", "a number in [1, 4096]", "100000"},
      // No range declared still means finite.
      {"name: x\noffset: -.inf\n", {}, "offset", "a finite number", "-.inf"},
      {"name: x\n", {"offset=.NaN"}, "offset", "a finite number", ".NaN"},
  };
  for (const auto& c : cases) {
    const auto e = error_of(c.yaml, c.overrides);
    EXPECT_EQ(e.message(), "config key '" + c.key + "' is out of range") << c.yaml;
    EXPECT_EQ(e.field(), c.key);
    EXPECT_NE(std::string(e.what()).find("expected: " + c.expected + "\n"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("got: " + c.got), std::string::npos) << e.what();
  }
  // The bounds themselves are inside, and negative values are fine where the range allows them.
  const auto config = Config::parse(training_schema(), "name: x\nbatch_size: 4096\noffset: -3.5\noptimizer:\n  betas: [0, 0.999]\n", "run.yaml");
  EXPECT_EQ(config.get_int("batch_size"), 4096);
  EXPECT_EQ(config.get_float("offset"), -3.5);
}

TEST(Config, InvalidChoiceListsTheChoices) {
  const auto e = error_of("name: x\nmethod: dmd\n");
  EXPECT_EQ(e.message(), "config key 'method' has an invalid value");
  EXPECT_NE(std::string(e.what()).find("expected: one of: dmd2, consistency, reflow"), std::string::npos);
  EXPECT_EQ(e.hint(), "did you mean 'dmd2'?");
}

TEST(Config, BadOverrideSyntax) {
  for (const std::string bad : {"batch_size", "=3", ""}) {
    const auto e = error_of("name: x", {bad});
    EXPECT_EQ(e.message(), "bad override '" + bad + "'");
    EXPECT_EQ(e.field(), "--set");
  }
}

TEST(Config, MissingRequiredKeyAndBrokenYaml) {
  EXPECT_EQ(error_of("batch_size: 3").message(), "missing required config key 'name'");
  EXPECT_NE(error_of("name: [unclosed").message().find("invalid YAML at line 1"), std::string::npos);
  EXPECT_EQ(error_of("- a\n- b\n").message(), "a config file must be a YAML mapping of keys to values");
  // A key that is itself a list or a map (found by fuzzing: yaml-cpp's own exception escaped).
  EXPECT_EQ(error_of("name: x\n[a, b]: 1\n").message(), "a config key must be a plain name");
  EXPECT_EQ(error_of("name: x\noptimizer:\n  {lr: 1}: 2\n").hint(), "under optimizer");
}

TEST(Config, MissingFileNamesThePath) {
  try {
    Config::load(training_schema(), "/nonexistent/run.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "/nonexistent/run.yaml");
  }
}

TEST(Config, ClosestMatchOnlySuggestsLikelyTypos) {
  EXPECT_EQ(closest_match("heun2", {"heun", "euler"}), "heun");
  EXPECT_EQ(closest_match("completely-different", {"heun", "euler"}), std::nullopt);
}

}  // namespace
}  // namespace distillery
