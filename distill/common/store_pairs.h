// defines: pairs_for_step
// The (noise, endpoint) pairs a training step reads from a trajectory store (DMD2's regression,
// reflow, InstaFlow): batch number step·world_size + rank of the store's shuffled stream, so the
// ranks of a step read disjoint rows and a resumed run reads the same ones again.
#pragma once

#include "trajectories/trajectory_reader.h"

namespace distillery {

class StepContext;

TrajectoryReader::Pairs pairs_for_step(TrajectoryReader& reader, const StepContext& context);

}  // namespace distillery
