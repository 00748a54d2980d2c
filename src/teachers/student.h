// defines: student_file, student_request
// A distilled student as `generate` and `report` find it: its file (or a run directory's
// student.safetensors) and the σ grid and sampler it was trained for, from the file's metadata;
// a consistency student also lists grids for other step counts (student_step_sigmas), a
// trajectory model its γ (student_gamma), and a student of some of the classes the label
// policy that cycles through them (student_labels).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "samplers/sampling.h"

namespace distillery {

std::filesystem::path student_file(const std::string& model);
// `steps`: the grid of that many steps (Error naming the counts the file offers), else the trained one.
SampleRequest student_request(const std::filesystem::path& path, std::optional<int> steps = std::nullopt);

}  // namespace distillery
