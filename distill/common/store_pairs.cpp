#include "distill/common/store_pairs.h"

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "models/denoiser.h"
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
  return reader;
}

TrajectoryReader::Pairs pairs_for_step(TrajectoryReader& reader, const StepContext& context) {
  return reader.pairs(reader.batch_indices(context.step * context.world_size + context.rank, context.batch, context.seed));
}

}  // namespace distillery
