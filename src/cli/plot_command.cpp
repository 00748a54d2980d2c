// `distillery plot`: a line plot (PNG) of named series from a JSON file, for figures that scripts
// assemble from measurements (FD against NFE across methods), drawn like the trainer's own plots.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "io/image.h"

namespace distillery {

namespace {

std::vector<double> numbers(const nlohmann::json& value, const std::string& file, const std::string& field) {
  DISTILLERY_CHECK(value.is_array() && std::all_of(value.begin(), value.end(), [](const nlohmann::json& v) { return v.is_number(); }),
                   Error("a series' values must be a list of numbers").file(file).field(field).got(value.dump().substr(0, 80)));
  return value.get<std::vector<double>>();
}

void run_plot(const std::string& data, const std::string& out, bool log_y, bool log_x) {
  std::ifstream in(data);
  DISTILLERY_CHECK(in.good(), Error("cannot read the plot's data").file(data));
  const auto parsed = nlohmann::json::parse(in, nullptr, false);
  const std::string expected = R"({"title": "…", "series": [{"name": "…", "x": [numbers], "y": [numbers]}, …]})";
  DISTILLERY_CHECK(parsed.is_object() && parsed.contains("series") && parsed["series"].is_array() && !parsed["series"].empty(),
                   Error("the plot's data is not a JSON object with a list of series").file(data).expected(expected));
  std::vector<PlotSeries> series;
  for (size_t i = 0; i < parsed["series"].size(); ++i) {
    const auto& entry = parsed["series"][i];
    const auto field = fmt::format("series[{}]", i);
    DISTILLERY_CHECK(entry.is_object() && entry.contains("name") && entry["name"].is_string() && entry.contains("x") && entry.contains("y"),
                     Error("a series needs a name, x and y").file(data).field(field).expected(expected));
    series.push_back({entry["name"].get<std::string>(), numbers(entry["x"], data, field + ".x"), numbers(entry["y"], data, field + ".y")});
  }
  const auto title = parsed.contains("title") && parsed["title"].is_string() ? parsed["title"].get<std::string>() : std::string();
  line_plot_extent(series, log_y, log_x, data);  // so that a bad value is blamed on the data, not the PNG
  const std::filesystem::path path = out;
  if (!path.parent_path().empty()) std::filesystem::create_directories(path.parent_path());
  write_line_plot(path, series, title, log_y, log_x);
  spdlog::info("wrote {} ({} series)", out, series.size());
}

}  // namespace

void add_plot_command(CLI::App& app) {
  auto data = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto log_y = std::make_shared<bool>(false), log_x = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("plot", "draw named series from a JSON file as a line plot (PNG)");
  cmd->add_option("--data", *data, R"(JSON: {"title": "…", "series": [{"name": "…", "x": [...], "y": [...]}, …]})")->required();
  cmd->add_option("--out", *out, "the PNG to write")->required();
  cmd->add_flag("--log-y", *log_y, "y on a log10 scale");
  cmd->add_flag("--log-x", *log_x, "x on a log10 scale");
  cmd->callback([data, out, log_y, log_x] { run_plot(*data, *out, *log_y, *log_x); });
}

}  // namespace distillery
