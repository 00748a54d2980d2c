// defines: open_teacher_store, add_regression_source_field, open_regression_store, pairs_for_step, one_step_regression
// The (noise, endpoint) pairs a training step reads from a trajectory store (DMD2's regression,
// reflow, InstaFlow, progressive distillation's inputs): the store is the method's teacher's, or
// for a regression the model <prefix>.regression_source names (checked by fingerprint), and a step reads batch number step·world_size + rank of the store's
// shuffled stream, so the ranks of a step read disjoint rows and a resumed run reads the same
// ones again.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "distill/common/distances.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

class Config;
class ConfigSchema;
class Denoiser;
class StepContext;

// The store named by config key `key`, recorded from `teacher_spec` with samples of the
// student's shape, and with labels when the student is class-conditional (trained on a store
// recorded with --labels none, it would learn only its unconditional branch). A student of some
// classes (student.classes) reads only their pairs. An empty key is an error that says `purpose`
// and how to record one.
std::unique_ptr<TrajectoryReader> open_teacher_store(const Config& config, const std::string& key, const std::string& teacher_spec,
                                                     const Denoiser& student, const std::string& purpose);

// <prefix>.regression_source: the model a regression store was recorded from when that is not
// the teacher, such as a distilled one-step student whose sharper samples are the targets.
void add_regression_source_field(ConfigSchema& schema, const std::string& prefix);

// The store of a one-step student's regression (one_step_regression), <prefix>.regression_store:
// as open_teacher_store, recorded from <prefix>.regression_source (the teacher when empty), and
// its trajectories must start at the student's σ.
std::unique_ptr<TrajectoryReader> open_regression_store(const Config& config, const std::string& prefix, const std::string& teacher_spec,
                                                        const Denoiser& student, double student_sigma);

TrajectoryReader::Pairs pairs_for_step(TrajectoryReader& reader, const StepContext& context);

// A one-step student's regression onto its teacher's ODE solutions (DMD2's and ADD's): d(G(σ₀·z), x)
// for each pair (z, x) of this step, σ₀ the store's first σ; [k] on `device`.
at::Tensor one_step_regression(TrajectoryReader& reader, Denoiser& student, const Distance& distance, const StepContext& context,
                               const c10::Device& device);

}  // namespace distillery
