// defines: load_teacher, teacher_forms, teacher_fingerprint
// Resolves a teacher spec from the command line or a config into a denoiser.
#pragma once

#include <memory>
#include <string>

#include "models/denoiser.h"

namespace distillery {

// "gmm:FILE.yaml": the analytic Gaussian-mixture teacher; "FILE.safetensors": a trained
// denoiser; a directory: its teacher.safetensors. Placed on `device`.
std::unique_ptr<Denoiser> load_teacher(const std::string& spec, const c10::Device& device);
std::string teacher_forms();  // the accepted forms, for help text and errors

// Hex FNV-1a of the bytes that define the teacher (the mixture spec, the weights file), so
// artifacts made from it (trajectory stores) can be matched to it whatever path it had.
std::string teacher_fingerprint(const std::string& spec);

}  // namespace distillery
