#include "distill/common/store_pairs.h"

#include <fmt/format.h>

#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "distill/common/student_network.h"
#include "models/denoiser.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

std::unique_ptr<TrajectoryReader> open_teacher_store(const Config& config, const std::string& key, const std::string& teacher_spec,
                                                     const Denoiser& student, const std::string& purpose) {
  const auto store = config.get_string(key);
  DISTILLERY_CHECK(!store.empty(), Error(purpose).file(config.source()).field(key)
                                       .hint(fmt::format("record one from the teacher (`distillery record --teacher {} --store endpoints`)", teacher_spec)));
  auto reader = std::make_unique<TrajectoryReader>(store, StoreExpectation{teacher_fingerprint(teacher_spec), student.sample_shape()});
  const auto& labels = reader->settings().labels;
  DISTILLERY_CHECK(student.num_classes() == 0 || (!labels.empty() && labels != "none"),
                   Error("a class-conditional student needs a store recorded with labels").file(store).field(key)
                       .got(labels.empty() ? "a store of an unconditional teacher" : "--labels none").hint("record it with --labels all"));
  if (student.num_classes() > 0) {
    const auto classes = student_classes(config, student.num_classes());
    if (static_cast<int64_t>(classes.size()) < student.num_classes()) reader->keep_classes(classes);
  }
  return reader;
}

void add_regression_source_field(ConfigSchema& s, const std::string& prefix) {
  s.add({prefix + ".regression_source", ConfigType::String,
         "the model the regression store was recorded from, when not the teacher (a distilled one-step student, say: its samples become the targets)",
         "\"\""});
}

std::unique_ptr<TrajectoryReader> open_regression_store(const Config& config, const std::string& prefix, const std::string& teacher_spec,
                                                        const Denoiser& student, double student_sigma) {
  const auto key = prefix + ".regression_store";
  const auto source = config.get_string(prefix + ".regression_source");
  auto reader = open_teacher_store(config, key, source.empty() ? teacher_spec : source, student, "the regression loss needs the teacher's trajectory store");
  const double start = reader->sigmas().front();
  DISTILLERY_CHECK(std::abs(start - student_sigma) < 1e-6 * student_sigma, Error("the regression store starts at another σ than the student")
                                                                               .file(config.get_string(key)).field(key)
                                                                               .expected(std::to_string(student_sigma)).got(std::to_string(start)));
  return reader;
}

TrajectoryReader::Pairs pairs_for_step(TrajectoryReader& reader, const StepContext& context) {
  return reader.pairs(reader.batch_indices(context.step * context.world_size + context.rank, context.batch, context.seed));
}

at::Tensor one_step_regression(TrajectoryReader& reader, Denoiser& student, const Distance& distance, const StepContext& context,
                               const c10::Device& device) {
  const auto pair = pairs_for_step(reader, context);
  const auto noise = pair.noise.to(device);
  const double start = reader.sigmas().front();
  const auto generated = denoise_rows(student, noise * start, std::vector<double>(static_cast<size_t>(noise.size(0)), start),
                                      student.num_classes() > 0 ? pair.labels.to(device) : at::Tensor());
  return distance(generated, pair.sample.to(device));
}

}  // namespace distillery
