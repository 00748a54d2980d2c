// defines: make_student_network
// The student network every method starts from: the teacher's network (student.init: teacher),
// or the model.* network built from scratch with train.seed (student.init: scratch), on the
// teacher's device, checked to fit the teacher's samples and classes, in eval mode (no
// dropout, never a dropped label: a conditional student always sees its class).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "models/network_denoiser.h"

namespace distillery {

class Config;

// `needs`: the preconditioning the student must have (CD's consistency boundary condition) and
// whether it takes a target time (CTM): the teacher's network is cloned with them, and a
// scratch network must declare them.
std::unique_ptr<NetworkDenoiser> make_student_network(const Config& config, const std::string& teacher_spec, Denoiser& teacher,
                                                      const NetworkChanges& needs = {});

}  // namespace distillery
