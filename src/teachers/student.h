// defines: student_file, student_request
// A distilled student as `generate` and `report` find it: its file (or a run directory's
// student.safetensors) and the σ grid and sampler it was trained for, from the file's metadata.
#pragma once

#include <filesystem>
#include <string>

#include "samplers/sampling.h"

namespace distillery {

std::filesystem::path student_file(const std::string& model);
SampleRequest student_request(const std::filesystem::path& path);

}  // namespace distillery
