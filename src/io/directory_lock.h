// defines: DirectoryLock, remove_stale_temporaries
// One writer per output directory: a run holds an exclusive flock on a lock file in the
// directory for as long as it writes there, and a second run on the same directory is
// refused with the holder's PID instead of interleaving its logs and shards with the first.
// The kernel drops the lock when its holder dies, however it dies, so a killed run never
// leaves a stale lock behind.
#pragma once

#include <filesystem>
#include <string>

namespace distillery {

class DirectoryLock {
 public:
  // Creates `dir` if needed and locks `dir/<lock_name>` (a hidden name, e.g. ".lock"). `what`
  // names the writer in the refusal ("training run", "recording of part 1/2").
  DirectoryLock(const std::filesystem::path& dir, const std::string& lock_name, const std::string& what);
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&&) = delete;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock();

 private:
  int fd_ = -1;
};

// Removes what atomic writes (io/atomic_file.h) leave in `dir` when a process is killed
// mid-write: ".<name>.tmp.<pid>" files and folders. Only safe while holding the directory's lock.
void remove_stale_temporaries(const std::filesystem::path& dir);

}  // namespace distillery
