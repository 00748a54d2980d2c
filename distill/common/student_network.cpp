#include "distill/common/student_network.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
#include <numeric>

#include "core/config.h"
#include "core/error.h"

namespace distillery {

std::unique_ptr<NetworkDenoiser> make_student_network(const Config& config, const std::string& teacher_spec, Denoiser& teacher,
                                                      const NetworkChanges& needs) {
  std::unique_ptr<NetworkDenoiser> student;
  const auto init = config.get_string("student.init");
  if (student_starts_from_file(config)) {
    student = NetworkDenoiser::load(init)->clone(needs);
    student->to(teacher.device());
  } else if (init == "teacher") {
    auto* teacher_network = dynamic_cast<NetworkDenoiser*>(&teacher);
    DISTILLERY_CHECK(teacher_network, Error("student.init: teacher needs a trained network teacher").field("student.init").got(teacher_spec)
                                          .hint("an analytic teacher has no weights: set student.init=scratch and model.*"));
    student = teacher_network->clone(needs);
  } else {
    if (needs.parameterization) {
      const auto declared = config.get_string("precond.parameterization");
      DISTILLERY_CHECK(declared == parameterization_name(*needs.parameterization),
                       Error("this method's student needs another preconditioning").file(config.source()).field("precond.parameterization")
                           .expected(std::string(parameterization_name(*needs.parameterization))).got(declared));
    }
    DISTILLERY_CHECK(!needs.target_time || config.get_bool("model.target_time"),
                     Error("this method's student jumps to a target time: its network needs that input").file(config.source())
                         .field("model.target_time").expected("true").got("false"));
    torch::manual_seed(static_cast<uint64_t>(config.get_int("train.seed")));
    student = NetworkDenoiser::from_config(config);
    student->to(teacher.device());
  }
  DISTILLERY_CHECK(student->sample_shape() == teacher.sample_shape(),
                   Error("the student network does not fit the teacher").field("model")
                       .expected(fmt::format("samples of shape [{}]", fmt::join(teacher.sample_shape(), ", ")))
                       .got(fmt::format("[{}]", fmt::join(student->sample_shape(), ", "))));
  DISTILLERY_CHECK(student->num_classes() == teacher.num_classes(),
                   Error("the student and the teacher disagree on the classes").field("model.num_classes")
                       .expected(std::to_string(teacher.num_classes())).got(std::to_string(student->num_classes())));
  student->module().eval();
  return student;
}

bool student_starts_from_file(const Config& config) {
  const auto init = config.get_string("student.init");
  if (init == "teacher" || init == "scratch") return false;
  DISTILLERY_CHECK(init.ends_with(".safetensors"), Error("unknown student.init").file(config.source()).field("student.init")
                                                       .expected("teacher, scratch, or a network file (.safetensors)").got(init));
  return true;
}

std::vector<int64_t> student_classes(const Config& config, int64_t num_classes) {
  auto classes = config.get_int_list("student.classes");
  DISTILLERY_CHECK(classes.empty() || num_classes > 0, Error("only a class-conditional student learns a subset of the classes").file(config.source())
                                                           .field("student.classes").expected("[] for an unconditional teacher"));
  if (classes.empty()) {
    classes.resize(static_cast<size_t>(num_classes));
    std::iota(classes.begin(), classes.end(), int64_t{0});
    return classes;
  }
  std::sort(classes.begin(), classes.end());
  DISTILLERY_CHECK(classes.back() < num_classes && std::adjacent_find(classes.begin(), classes.end()) == classes.end(),
                   Error("student.classes must be distinct classes of the teacher").file(config.source()).field("student.classes")
                       .expected(fmt::format("distinct values in 0..{}", num_classes - 1)).got(fmt::format("[{}]", fmt::join(classes, ", "))));
  return classes;
}

std::string label_policy_of(const std::vector<int64_t>& classes, int64_t num_classes) {
  return static_cast<int64_t>(classes.size()) < num_classes ? fmt::format("{}", fmt::join(classes, ",")) : std::string();
}

}  // namespace distillery
