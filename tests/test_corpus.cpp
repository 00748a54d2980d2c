// The malformed-input corpus (tests/corpus/, written by make_corpus.py): every damaged file and
// bad argument must make its command fail, without a signal, with exactly the error recorded
// for it, and with no raw library text (stack frames, HDF5 diagnostics, JSON library tags).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_support.h"

namespace distillery {
namespace {

struct CorpusCase {
  std::string name, command, error;
};

std::vector<CorpusCase> corpus_cases() {
  std::vector<CorpusCase> cases;
  std::ifstream in(testing::kSourceDir / "tests/corpus/cases.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto entry = nlohmann::json::parse(line);
    cases.push_back({entry.at("name"), entry.at("command"), entry.at("error").is_string() ? entry.at("error").get<std::string>() : ""});
  }
  return cases;
}

std::string substituted(std::string text, const std::filesystem::path& out) {
  const std::pair<std::string, std::string> placeholders[] = {{"{cli}", testing::kCli},
                                                              {"{corpus}", (testing::kSourceDir / "tests/corpus").string()},
                                                              {"{source}", testing::kSourceDir.string()},
                                                              {"{out}", out.string()}};
  for (const auto& [placeholder, value] : placeholders)
    for (auto at = text.find(placeholder); at != std::string::npos; at = text.find(placeholder, at + value.size())) text.replace(at, placeholder.size(), value);
  return text;
}

void PrintTo(const CorpusCase& c, std::ostream* os) { *os << c.name; }

class MalformedInput : public ::testing::TestWithParam<CorpusCase> {};

TEST_P(MalformedInput, IsRefusedWithItsRecordedError) {
  const auto& c = GetParam();
  ASSERT_FALSE(c.error.empty()) << c.name << " has no recorded error: run tests/corpus/make_corpus.py CLI --record and review it";
  const auto out = testing::scratch_dir();
  const auto result = testing::run_command("cd " + testing::shell_quoted(out) + " && " + substituted(c.command, out));
  EXPECT_GT(result.exit_code, 0) << result.output;
  EXPECT_LT(result.exit_code, 128) << "killed by a signal:\n" << result.output;
  for (const char* raw : {"terminate called", "frame #", "HDF5-DIAG", "[json.exception", "libpng error", "OpenCV(", "[enforce fail", "std::bad_alloc",
                          "basic_filebuf", "yaml-cpp:"})
    EXPECT_EQ(result.output.find(raw), std::string::npos) << "raw library text '" << raw << "':\n" << result.output;
  // Our errors from their "error: " line on (log lines before it carry times); the argument
  // parser's messages whole.
  std::string shown = result.output;
  if (c.error.starts_with("error: ") && !shown.starts_with("error: ")) {
    const auto at = shown.find("\nerror: ");
    shown = at == std::string::npos ? shown : shown.substr(at + 1);
  }
  EXPECT_EQ(shown, substituted(c.error, out));
}

std::string case_name(const ::testing::TestParamInfo<CorpusCase>& info) {
  std::string name = info.param.name;
  for (auto& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedInput, ::testing::ValuesIn(corpus_cases()), case_name);

}  // namespace
}  // namespace distillery
