#include "distill/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>

#include "core/config.h"
#include "core/error.h"
#include "data/training_data.h"
#include "distill/add.h"
#include "distill/cd.h"
#include "distill/ctm.h"
#include "distill/diffusion2gan.h"
#include "distill/disback.h"
#include "distill/dmd2.h"
#include "distill/ect.h"
#include "distill/ict.h"
#include "distill/instaflow.h"
#include "distill/ladd.h"
#include "distill/msd.h"
#include "distill/pd.h"
#include "distill/reflow.h"
#include "distill/scm.h"
#include "eval/in_loop_evaluation.h"
#include "models/network_denoiser.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

namespace {
struct MethodEntry {
  std::string_view name;
  std::unique_ptr<TrainingMethod> (*make)(const Config&, const std::string&, const c10::Device&);
  void (*add_fields)(ConfigSchema&);
  bool reads_student_classes;  // keeps to student.classes (its labels and real examples), or refuses them itself
};
constexpr std::array<MethodEntry, 14> kMethods = {{{"dmd2", make_dmd2, add_dmd2_fields, true},
                                                 {"add", make_add, add_add_fields, true},
                                                 {"cd", make_cd, add_cd_fields, false},
                                                 {"ctm", make_ctm, add_ctm_fields, false},
                                                 {"diffusion2gan", make_diffusion2gan, add_diffusion2gan_fields, false},
                                                 {"disback", make_disback, add_disback_fields, false},
                                                 {"ect", make_ect, add_ect_fields, false},
                                                 {"ict", make_ict, add_ict_fields, false},
                                                 {"instaflow", make_instaflow, add_instaflow_fields, false},
                                                 {"ladd", make_ladd, add_ladd_fields, true},
                                                 {"msd", make_msd, add_msd_fields, true},
                                                 {"pd", make_pd, add_pd_fields, false},
                                                 {"reflow", make_reflow, add_reflow_fields, false},
                                                 {"scm", make_scm, add_scm_fields, false}}};
}  // namespace

void add_student_fields(ConfigSchema& s) {
  s.add({"student.sigmas", ConfigType::FloatList, "the student's σ grid, first value where the noise enters (default: [the teacher's σ_max], one step)", "[]"}, NumberRange::above(0));
  s.add({"student.classes", ConfigType::IntList,
         "the classes the student learns and generates (a class-conditional teacher; []: all): DMD2, ADD and LADD honour it, MSD sets it per student",
         "[]"}, NumberRange::between(0, 1 << 20));
  s.add({"student.init", ConfigType::String,
         "initial weights of the student: teacher (the teacher's network, which any network the method builds from it starts as too), scratch (the "
         "model.* network, seeded by train.seed), or a network file (.safetensors, a student another run wrote; the method's other networks start as the teacher)",
         "teacher"});
}

std::vector<std::string> distillation_method_names() {
  std::vector<std::string> names;
  for (const auto& entry : kMethods) names.emplace_back(entry.name);
  return names;
}

namespace {
const MethodEntry& method_entry(std::string_view name) {
  for (const auto& entry : kMethods)
    if (entry.name == name) return entry;
  throw Error(fmt::format("unknown distillation method '{}'", name)).field("method").expected(fmt::format("one of: {}", fmt::join(distillation_method_names(), ", ")));
}
}  // namespace

const ConfigSchema& distillation_schema(std::string_view method) {
  static const auto schemas = [] {
    std::vector<ConfigSchema> all;
    for (const auto& entry : kMethods) {
      ConfigSchema s;
      s.add({"method", ConfigType::String, "distillation method", "dmd2", false, distillation_method_names()});
      add_trainer_fields(s);
      add_in_loop_evaluation_fields(s);
      add_network_fields(s);
      add_training_data_fields(s);
      add_student_fields(s);
      entry.add_fields(s);
      all.push_back(std::move(s));
    }
    return all;
  }();
  return schemas[static_cast<size_t>(&method_entry(method) - kMethods.data())];
}

Config load_distillation_config(const std::filesystem::path& recipe, const std::vector<std::string>& overrides) {
  const auto method = Config::peek_string(recipe, overrides, "method").value_or("dmd2");
  try {
    return Config::load(distillation_schema(method), recipe, overrides);
  } catch (Error& e) {
    // An unknown key may belong to another method: say whose schema was used.
    if (e.message().starts_with("unknown config key")) e.hint(fmt::format("{} (this recipe's method is {})", e.hint().empty() ? "check the key" : e.hint(), method));
    throw;
  }
}

std::unique_ptr<TrainingMethod> make_distillation_method(const Config& config, const std::string& teacher, const c10::Device& device) {
  const auto& entry = method_entry(config.get_string("method"));
  DISTILLERY_CHECK(entry.reads_student_classes || config.get_int_list("student.classes").empty(),
                   Error(fmt::format("the {} method learns every class: it cannot keep to student.classes", entry.name)).file(config.source())
                       .field("student.classes").expected("[]").hint("dmd2, add and ladd train a student on a subset of the classes; msd splits them itself"));
  return entry.make(config, teacher, device);
}

void run_distillation(const TrainingRunOptions& run_options, const std::string& teacher) {
  auto options = run_options;
  options.inputs["teacher"] = teacher_fingerprint(teacher);
  const auto config = load_distillation_config(options.config_file, options.overrides);
  const auto method = make_distillation_method(config, teacher, options.runtime.device);
  run_trainer(*method, config, options, make_trainer_callbacks(config, method->generator()->sample_shape(), options.runtime));
}

}  // namespace distillery
