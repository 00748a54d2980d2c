#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/error.h"

namespace distillery {

namespace {

Error io_error(const std::string& what, const std::filesystem::path& path) {
  return Error(what + ": " + std::strerror(errno)).file(path.string());
}

// Closes on scope exit so every error path releases the descriptor.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void fsync_path(const std::filesystem::path& path, int flags) {
  Fd f{::open(path.c_str(), flags | O_CLOEXEC)};
  if (f.fd < 0) throw io_error("cannot open for fsync", path);
  if (::fsync(f.fd) != 0) throw io_error("fsync failed", path);
}

}  // namespace

std::filesystem::path temporary_sibling(const std::filesystem::path& final) {
  return final.parent_path() / ("." + final.filename().string() + ".tmp." + std::to_string(::getpid()));
}

void publish_atomically(const std::filesystem::path& tmp, const std::filesystem::path& final) {
  fsync_path(tmp, O_RDONLY);
  if (std::rename(tmp.c_str(), final.c_str()) != 0) throw io_error("cannot rename " + tmp.string() + " into place", final);
  const auto dir = final.parent_path().empty() ? std::filesystem::path(".") : final.parent_path();
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  const auto tmp = temporary_sibling(path);
  {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (f.fd < 0) throw io_error("cannot create file", tmp);
    for (size_t written = 0; written < bytes.size();) {
      const ssize_t n = ::write(f.fd, bytes.data() + written, bytes.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const Error failure = io_error("write failed", tmp);
        ::unlink(tmp.c_str());
        throw failure;
      }
      written += static_cast<size_t>(n);
    }
  }
  try {
    publish_atomically(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace distillery
