#include "teachers/student.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tensor_file.h"
#include "samplers/sampler.h"

namespace distillery {

std::filesystem::path student_file(const std::string& model) {
  const std::filesystem::path path = std::filesystem::is_directory(model) ? std::filesystem::path(model) / "student.safetensors" : std::filesystem::path(model);
  DISTILLERY_CHECK(std::filesystem::is_regular_file(path), Error("no student file").file(path.string())
                                                               .expected("a student .safetensors or a distillation run directory holding student.safetensors"));
  return path;
}

namespace {

// A JSON list of positive, strictly decreasing σ, or Error naming the metadata field.
std::vector<double> sigma_list(const nlohmann::json& parsed, const std::filesystem::path& path, const std::string& field, const std::string& text) {
  const auto is_sigma = [](const nlohmann::json& value) { return value.is_number() && std::isfinite(value.get<double>()) && value.get<double>() > 0; };
  DISTILLERY_CHECK(parsed.is_array() && !parsed.empty() && std::all_of(parsed.begin(), parsed.end(), is_sigma),
                   Error(field + " metadata is not a list of σ").file(path.string()).field(field).expected("a JSON list of positive numbers, largest first").got(text));
  auto sigmas = parsed.get<std::vector<double>>();
  DISTILLERY_CHECK(std::adjacent_find(sigmas.begin(), sigmas.end(), std::less_equal<>()) == sigmas.end(),
                   Error(field + " metadata is not strictly decreasing").file(path.string()).field(field).expected("a JSON list of positive numbers, largest first").got(text));
  return sigmas;
}

}  // namespace

SampleRequest student_request(const std::filesystem::path& path, std::optional<int> steps) {
  const auto metadata = load_tensor_file(path).metadata;
  const auto sampler = metadata.find("student_sampler"), sigmas = metadata.find("student_sigmas");
  DISTILLERY_CHECK(sampler != metadata.end() && sigmas != metadata.end(),
                   Error("not a student: the file has no student_sampler / student_sigmas metadata").file(path.string())
                       .hint("draw from teachers with `distillery sample`"));
  SampleRequest request;
  request.sampler = sampler->second;
  const auto names = sampler_names();
  DISTILLERY_CHECK(std::find(names.begin(), names.end(), request.sampler) != names.end(),
                   Error("the student's sampler is unknown").file(path.string()).field("student_sampler")
                       .expected(fmt::format("one of: {}", fmt::join(names, ", "))).got(request.sampler));
  request.sigmas = sigma_list(nlohmann::json::parse(sigmas->second, nullptr, false), path, "student_sigmas", sigmas->second);
  if (const auto labels = metadata.find("student_labels"); labels != metadata.end()) request.labels = labels->second;
  if (const auto gamma = metadata.find("student_gamma"); gamma != metadata.end()) {
    const auto parsed = nlohmann::json::parse(gamma->second, nullptr, false);
    DISTILLERY_CHECK(parsed.is_number() && parsed.get<double>() >= 0 && parsed.get<double>() <= 1,
                     Error("student_gamma metadata is not a γ of γ-sampling").file(path.string()).field("student_gamma").expected("a number in [0, 1]")
                         .got(gamma->second));
    request.options.gamma = parsed.get<double>();
  }
  if (steps && *steps != static_cast<int>(request.sigmas.size())) {
    // Only a student that can jump from any σ (a consistency model) offers other counts.
    std::map<int, std::vector<double>> offered = {{static_cast<int>(request.sigmas.size()), request.sigmas}};
    if (const auto by_steps = metadata.find("student_step_sigmas"); by_steps != metadata.end()) {
      const auto parsed = nlohmann::json::parse(by_steps->second, nullptr, false);
      DISTILLERY_CHECK(parsed.is_object(), Error("student_step_sigmas metadata is not a JSON object of σ lists").file(path.string())
                                               .field("student_step_sigmas").got(by_steps->second));
      for (const auto& [count, list] : parsed.items()) {
        const auto grid = sigma_list(list, path, "student_step_sigmas", by_steps->second);
        DISTILLERY_CHECK(count == std::to_string(grid.size()), Error("a student_step_sigmas list's length differs from its step count").file(path.string())
                                                                   .field("student_step_sigmas").got(by_steps->second));
        offered[static_cast<int>(grid.size())] = grid;
      }
    }
    const auto found = offered.find(*steps);
    if (found == offered.end()) {
      std::vector<int> counts;
      for (const auto& entry : offered) counts.push_back(entry.first);
      throw Error("the student has no σ grid for this number of steps").file(path.string()).field("--steps")
          .expected(fmt::format("one of: {}", fmt::join(counts, ", "))).got(std::to_string(*steps));
    }
    request.sigmas = found->second;
  }
  request.steps = static_cast<int>(request.sigmas.size());
  return request;
}

}  // namespace distillery
