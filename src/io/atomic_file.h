// defines: temporary_sibling, publish_atomically, write_file_atomic
// Crash-safe file creation: write under a temporary name in the same directory, fsync it,
// rename it over the final name, fsync the directory. A reader (or a resumed job) sees either
// the old file or the complete new one, never a torn write.
#pragma once

#include <filesystem>
#include <string_view>

namespace distillery {

// "<dir>/.<name>.tmp.<pid>": hidden, unique per process, on the same filesystem as `final`.
std::filesystem::path temporary_sibling(const std::filesystem::path& final);

// fsync(tmp), rename(tmp, final), fsync(parent directory). Throws Error naming the path.
void publish_atomically(const std::filesystem::path& tmp, const std::filesystem::path& final);

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

}  // namespace distillery
