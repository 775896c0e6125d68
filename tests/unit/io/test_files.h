// Temporary files for the I/O tests: created with mkstemp in a chosen directory, removed and
// closed at the end of the test.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace strata::testing {

class TempFile {
 public:
  // Creates an empty file in `dir` (e.g. "/dev/shm") opened read-write with `extra_flags`
  // (e.g. O_DIRECT). fd() is -1 and error() is the errno if that fails.
  explicit TempFile(const std::string& dir, int extra_flags = 0) {
    std::string pattern = dir + "/strata-io-test-XXXXXX";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    fd_ = ::mkostemp(name.data(), O_CLOEXEC | extra_flags);
    if (fd_ < 0) {
      error_ = errno;
      return;
    }
    path_ = name.data();
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_; }
  int error() const { return error_; }
  const std::string& path() const { return path_; }

  int64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return -1;
    return st.st_size;
  }

 private:
  int fd_ = -1;
  int error_ = 0;
  std::string path_;
};

// A recognisable byte for position `pos` of a buffer tagged `tag`.
inline char pattern_byte(uint64_t pos, unsigned tag) {
  return static_cast<char>((pos * 131 + tag * 17 + 1) & 0xff);
}

inline std::vector<char> pattern(size_t len, unsigned tag) {
  std::vector<char> out(len);
  for (size_t i = 0; i < len; ++i) out[i] = pattern_byte(i, tag);
  return out;
}

}  // namespace strata::testing
