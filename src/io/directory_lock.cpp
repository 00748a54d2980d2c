#include "io/directory_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/error.h"

namespace distillery {

DirectoryLock::DirectoryLock(const std::filesystem::path& dir, const std::string& lock_name, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  DISTILLERY_CHECK(!ec, Error("cannot create the output directory").file(dir.string()).got(ec.message()));
  const auto path = dir / lock_name;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  DISTILLERY_CHECK(fd_ >= 0, Error("cannot create the lock file").file(path.string()).got(std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char holder[32] = {};
    const auto n = ::pread(fd_, holder, sizeof holder - 1, 0);
    ::close(fd_);
    fd_ = -1;
    DISTILLERY_CHECK(error == EWOULDBLOCK, Error("cannot lock the output directory").file(path.string()).got(std::strerror(error)));
    throw Error("another process is writing to this directory").file(dir.string())
        .got(fmt::format("a {} by PID {} holds {}", what, n > 0 ? std::string(holder, std::strcspn(holder, "\n")) : "(unknown)", path.string()))
        .hint("wait for it to finish or stop it, or choose another output");
  }
  const auto pid = std::to_string(::getpid()) + "\n";
  DISTILLERY_CHECK(::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size()),
                   Error("cannot write the lock file").file(path.string()).got(std::strerror(errno)));
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);
}

void remove_stale_temporaries(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (name.starts_with(".") && name.find(".tmp.") != std::string::npos) std::filesystem::remove_all(entry.path(), ec);
  }
}

}  // namespace distillery
