// defines: open_teacher_store, pairs_for_step
// The (noise, endpoint) pairs a training step reads from a trajectory store (DMD2's regression,
// reflow, InstaFlow, progressive distillation's inputs): the store is the method's teacher's
// (checked by fingerprint), and a step reads batch number step·world_size + rank of the store's
// shuffled stream, so the ranks of a step read disjoint rows and a resumed run reads the same
// ones again.
#pragma once

#include <memory>
#include <string>

#include "trajectories/trajectory_reader.h"

namespace distillery {

class Config;
class Denoiser;
class StepContext;

// The store named by config key `key`, recorded from `teacher_spec` with samples of the
// student's shape, and with labels when the student is class-conditional (trained on a store
// recorded with --labels none, it would learn only its unconditional branch). An empty key is an
// error that says `purpose` and how to record one.
std::unique_ptr<TrajectoryReader> open_teacher_store(const Config& config, const std::string& key, const std::string& teacher_spec,
                                                     const Denoiser& student, const std::string& purpose);

TrajectoryReader::Pairs pairs_for_step(TrajectoryReader& reader, const StepContext& context);

}  // namespace distillery
