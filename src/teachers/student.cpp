#include "teachers/student.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>
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

SampleRequest student_request(const std::filesystem::path& path) {
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
  const auto parsed = nlohmann::json::parse(sigmas->second, nullptr, false);
  const auto is_sigma = [](const nlohmann::json& value) { return value.is_number() && std::isfinite(value.get<double>()) && value.get<double>() > 0; };
  DISTILLERY_CHECK(parsed.is_array() && !parsed.empty() && std::all_of(parsed.begin(), parsed.end(), is_sigma),
                   Error("student_sigmas metadata is not a list of σ").file(path.string()).field("student_sigmas")
                       .expected("a JSON list of positive numbers, largest first").got(sigmas->second));
  request.sigmas = parsed.get<std::vector<double>>();
  DISTILLERY_CHECK(std::adjacent_find(request.sigmas.begin(), request.sigmas.end(), std::less_equal<>()) == request.sigmas.end(),
                   Error("student_sigmas metadata is not strictly decreasing").file(path.string()).field("student_sigmas")
                       .expected("a JSON list of positive numbers, largest first").got(sigmas->second));
  request.steps = static_cast<int>(request.sigmas.size());
  return request;
}

}  // namespace distillery
