#include "distill/common/multistep_grids.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"

namespace distillery {

namespace {

std::map<int, std::vector<double>> multistep_grids(const Config& config, double sigma_max) {
  auto lists = config.get_float_matrix("student.multistep_sigmas");
  if (lists.empty()) lists = {{sigma_max}, {sigma_max, 0.821}, {sigma_max, 2.0, 0.821, 0.3}};
  std::map<int, std::vector<double>> grids;
  for (const auto& sigmas : lists) {
    const auto shown = fmt::format("[{}]", fmt::join(sigmas, ", "));
    DISTILLERY_CHECK(!sigmas.empty() && std::all_of(sigmas.begin(), sigmas.end(), [](double s) { return s > 0; }) &&
                         std::adjacent_find(sigmas.begin(), sigmas.end(), std::less_equal<>()) == sigmas.end(),
                     Error("a multistep σ grid must be positive and strictly decreasing").file(config.source()).field("student.multistep_sigmas").got(shown));
    DISTILLERY_CHECK(grids.emplace(static_cast<int>(sigmas.size()), sigmas).second,
                     Error("two multistep σ grids have the same number of steps").file(config.source()).field("student.multistep_sigmas")
                         .expected("one list per step count").got(shown));
  }
  return grids;
}

}  // namespace

void add_multistep_fields(ConfigSchema& s) {
  s.add({"student.multistep_sigmas", ConfigType::FloatMatrix,
         "σ points for sampling the consistency student with other step counts, one list per count, largest σ first "
         "(default: [[σ_max], [σ_max, 0.821], [σ_max, 2, 0.821, 0.3]]); `generate --steps k` walks the list of length k",
         "[]"});
}

ConsistencySampling::ConsistencySampling(const Config& config, double sigma_max) : grids_(multistep_grids(config, sigma_max)) {
  request_.sampler = "multistep";
  request_.sigmas = config.get_float_list("student.sigmas");
  if (request_.sigmas.empty()) request_.sigmas = {sigma_max};
  request_.steps = static_cast<int>(request_.sigmas.size());
}

std::map<std::string, std::string> ConsistencySampling::with_grids(std::map<std::string, std::string> metadata) const {
  nlohmann::json by_steps = nlohmann::json::object();
  for (const auto& [steps, sigmas] : grids_) by_steps[std::to_string(steps)] = sigmas;
  metadata["student_step_sigmas"] = by_steps.dump();
  return metadata;
}

}  // namespace distillery
