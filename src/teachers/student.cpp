#include "teachers/student.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tensor_file.h"

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
  const auto parsed = nlohmann::json::parse(sigmas->second, nullptr, false);
  DISTILLERY_CHECK(parsed.is_array() && !parsed.empty(), Error("student_sigmas metadata is not a list of σ").file(path.string()).got(sigmas->second));
  request.sigmas = parsed.get<std::vector<double>>();
  request.steps = static_cast<int>(request.sigmas.size());
  return request;
}

}  // namespace distillery
