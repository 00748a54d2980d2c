// defines: make_student_network, student_starts_from_file, student_classes, label_policy_of
// The student network every method starts from: the teacher's network (student.init: teacher),
// the model.* network built from scratch with train.seed (student.init: scratch), or another
// run's student read from its file (student.init: a .safetensors path), on the teacher's
// device, checked to fit the teacher's samples and classes, in eval mode (no dropout, never a
// dropped label: a conditional student always sees its class). And the classes it learns (student.classes: a subset, one student of several, or all of them).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/network_denoiser.h"

namespace distillery {

class Config;

// `needs`: the preconditioning the student must have (CD's consistency boundary condition) and
// whether it takes a target time (CTM): the teacher's network is cloned with them, and a
// scratch network must declare them.
std::unique_ptr<NetworkDenoiser> make_student_network(const Config& config, const std::string& teacher_spec, Denoiser& teacher,
                                                      const NetworkChanges& needs = {});

// student.classes checked against a network of `num_classes` classes (distinct, in range, and
// only for a class-conditional one), in increasing order; all of them when the key is empty.
// Empty for an unconditional network.
// Whether student.init names a network file; an unknown value is an error naming the key.
bool student_starts_from_file(const Config& config);
std::vector<int64_t> student_classes(const Config& config, int64_t num_classes);
// The `--labels` policy (data/label_policy.h) that cycles through `classes`: empty (every
// class, "all" by default) when they are all of the network's.
std::string label_policy_of(const std::vector<int64_t>& classes, int64_t num_classes);

}  // namespace distillery
