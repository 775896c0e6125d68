#include "harness.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "strata/builtin_drivers.h"

namespace strata::testing {

Harness::Harness() : engine_(std::make_unique<Engine>(loop_, builtin_drivers())) {}

Harness::~Harness() {
  blk_.reset();
  engine_.reset();
}

Result<Node*> Harness::add(nlohmann::json options) {
  return run_sync(loop_, engine_->add_node(std::move(options)));
}

Result<void> Harness::attach(Node& node, Perm perm, Perm shared) {
  blk_.reset();
  auto blk = engine_->attach_backend(node, "", perm, shared);
  if (!blk) return blk.error();
  blk_ = std::move(*blk);
  return {};
}

Result<void> Harness::read(uint64_t offset, std::span<uint8_t> buf) {
  return run_sync(loop_, blk_->read(offset, buf.size(), IoVec(buf.data(), buf.size())));
}

Result<std::vector<uint8_t>> Harness::read(uint64_t offset, uint64_t bytes) {
  std::vector<uint8_t> buf(bytes, 0xee);
  auto r = read(offset, std::span<uint8_t>(buf));
  if (!r) return r.error();
  return buf;
}

Result<void> Harness::write(uint64_t offset, std::span<const uint8_t> data, ReqFlags flags) {
  // IoVec describes memory for both directions; a write only reads from it.
  IoVec iov(const_cast<uint8_t*>(data.data()), data.size());
  return run_sync(loop_, blk_->write(offset, data.size(), iov, flags));
}

Result<void> Harness::readv(uint64_t offset, const IoVec& iov) {
  return run_sync(loop_, blk_->read(offset, iov.size(), iov));
}

Result<void> Harness::writev(uint64_t offset, const IoVec& iov) {
  return run_sync(loop_, blk_->write(offset, iov.size(), iov));
}

Result<void> Harness::write_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  return run_sync(loop_, blk_->pwrite_zeroes(offset, bytes, flags));
}

Result<void> Harness::discard(uint64_t offset, uint64_t bytes) {
  return run_sync(loop_, blk_->discard(offset, bytes));
}

Result<void> Harness::flush() { return run_sync(loop_, blk_->flush()); }

Result<BlockStatus> Harness::block_status(uint64_t offset, uint64_t bytes) {
  return run_sync(loop_, blk_->block_status(offset, bytes));
}

Result<void> Harness::truncate(uint64_t size, PreallocMode prealloc, bool exact) {
  return run_sync(loop_, blk_->truncate(size, exact, prealloc));
}

// ---- TempFile ----
// Test setup failures throw: GoogleTest reports them as the failing test's error.

TempFile::TempFile(const std::string& dir, uint64_t size) {
  std::string tmpl = dir + "/strata-conformance-XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw std::runtime_error("mkstemp in " + dir + ": " + std::strerror(errno));
  path_ = tmpl;
  int r = ::ftruncate(fd, static_cast<off_t>(size));
  ::close(fd);
  if (r != 0) throw std::runtime_error("ftruncate " + path_ + ": " + std::strerror(errno));
}

TempFile::~TempFile() { ::unlink(path_.c_str()); }

uint64_t TempFile::size_on_disk() const {
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) throw std::runtime_error("stat " + path_);
  return static_cast<uint64_t>(st.st_size);
}

std::vector<uint8_t> TempFile::contents(uint64_t offset, uint64_t bytes) const {
  std::vector<uint8_t> out(bytes, 0);
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + path_);
  ssize_t n = ::pread(fd, out.data(), bytes, static_cast<off_t>(offset));
  ::close(fd);
  if (n < 0) throw std::runtime_error("pread " + path_);
  out.resize(static_cast<size_t>(n));
  return out;
}

void TempFile::write_directly(uint64_t offset, std::span<const uint8_t> data) const {
  int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + path_);
  ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
  ::close(fd);
  if (n != static_cast<ssize_t>(data.size())) throw std::runtime_error("pwrite " + path_);
}

void TempFile::truncate_directly(uint64_t size) const {
  if (::truncate(path_.c_str(), static_cast<off_t>(size)) != 0) {
    throw std::runtime_error("truncate " + path_);
  }
}

// ---- data ----

uint8_t pattern_byte(uint32_t seed, uint64_t position) {
  return static_cast<uint8_t>((seed * 37 + position * 7) % 251 + 1);
}

std::vector<uint8_t> pattern(uint32_t seed, uint64_t offset, uint64_t bytes) {
  std::vector<uint8_t> out(bytes);
  for (uint64_t i = 0; i < bytes; ++i) out[i] = pattern_byte(seed, offset + i);
  return out;
}

bool all_zero(std::span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace strata::testing
