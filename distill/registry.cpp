#include "distill/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>

#include "core/config.h"
#include "core/error.h"
#include "data/training_data.h"
#include "distill/dmd2.h"
#include "models/network_denoiser.h"
#include "train/trainer.h"

namespace distillery {

namespace {
struct MethodEntry {
  std::string_view name;
  std::unique_ptr<TrainingMethod> (*make)(const Config&, const std::string&);
  void (*add_fields)(ConfigSchema&);
};
constexpr std::array<MethodEntry, 1> kMethods = {{{"dmd2", make_dmd2, add_dmd2_fields}}};
}  // namespace

std::vector<std::string> distillation_method_names() {
  std::vector<std::string> names;
  for (const auto& entry : kMethods) names.emplace_back(entry.name);
  return names;
}

const ConfigSchema& distillation_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    s.add({"method", ConfigType::String, "distillation method", "dmd2", false, distillation_method_names()});
    add_trainer_fields(s);
    add_network_fields(s);
    add_training_data_fields(s);
    for (const auto& entry : kMethods) entry.add_fields(s);
    return s;
  }();
  return schema;
}

std::unique_ptr<TrainingMethod> make_distillation_method(const Config& config, const std::string& teacher) {
  const auto name = config.get_string("method");
  for (const auto& entry : kMethods)
    if (entry.name == name) return entry.make(config, teacher);
  throw Error(fmt::format("unknown distillation method '{}'", name)).field("method").expected(fmt::format("one of: {}", fmt::join(distillation_method_names(), ", ")));
}

void run_distillation(const TrainingRunOptions& options, const std::string& teacher) {
  const auto config = Config::load(distillation_schema(), options.config_file, options.overrides);
  const auto method = make_distillation_method(config, teacher);
  run_trainer(*method, config, options);
}

}  // namespace distillery
