#include "distill/common/store_pairs.h"

#include "train/trainer.h"

namespace distillery {

TrajectoryReader::Pairs pairs_for_step(TrajectoryReader& reader, const StepContext& context) {
  return reader.pairs(reader.batch_indices(context.step * context.world_size + context.rank, context.batch, context.seed));
}

}  // namespace distillery
