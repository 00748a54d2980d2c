// defines: read_npz, write_npz
// numpy's .npz archives (a zip of .npy files), as pytorch-fid and EDM store FID statistics
// (`mu`, `sigma`). Reading accepts stored and deflated members (np.savez and
// np.savez_compressed), .npy versions 1–3, little-endian f8/f4/i8/u1 arrays in C order;
// anything else is an Error naming the file, the member and what was expected.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>

namespace distillery {

// Member name without ".npy" -> array (float64, float32, int64 or uint8).
std::map<std::string, at::Tensor> read_npz(const std::filesystem::path& path);

// Written through a temporary file and renamed; members stored uncompressed, as np.savez does.
void write_npz(const std::filesystem::path& path, const std::map<std::string, at::Tensor>& arrays);

}  // namespace distillery
