// Micro-benchmark: 4 KiB random reads through both FileIo backends, at depth 1 and 16.
//
//   strata_file_io_bench [file-dir] [seconds-per-case]     (defaults: /dev/shm, 1)
//
// Each case runs `depth` coroutines that read 4 KiB at random 4 KiB-aligned offsets of a 64 MiB
// file until the time is up, and prints the IOPS. "fast path" is the normal buffered request;
// "async only" passes direct=true on the buffered fd, which skips the synchronous attempt and
// shows what the asynchronous machinery itself costs.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "strata/event_loop.h"
#include "strata/file_io.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kFileSize = 64ull << 20;
constexpr size_t kBlock = 4096;

struct Shared {
  FileIo* io;
  int fd;
  bool direct;
  Clock::time_point deadline;
  uint64_t reads = 0;
  uint64_t errors = 0;
};

Task<void> reader(Shared* shared, uint64_t seed) {
  std::vector<char> buf(kBlock);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  while (Clock::now() < shared->deadline) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t offset = (x % (kFileSize / kBlock)) * kBlock;
    IoVec iov(buf.data(), kBlock);
    Result<size_t> r = co_await shared->io->preadv(shared->fd, iov, offset, shared->direct);
    if (!r || *r != kBlock) ++shared->errors;
    ++shared->reads;
  }
}

void run_case(AioMode mode, bool fast_path, int depth, int fd, double seconds) {
  EventLoop loop;
  Result<FileIo*> io = loop.file_io(mode);
  if (!io) {
    std::printf("%-9s %-11s depth %2d: %s\n", std::string(aio_mode_name(mode)).c_str(),
                fast_path ? "fast path" : "async only", depth, io.error().message().c_str());
    return;
  }
  Shared shared{*io, fd, !fast_path,
                Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(seconds))};
  auto start = Clock::now();
  for (int i = 0; i < depth; ++i) spawn(reader(&shared, static_cast<uint64_t>(i) + 1));
  loop.run();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%-9s %-11s depth %2d: %9.0f IOPS  (%.2f us/read, %llu reads, %llu errors)\n",
              std::string(aio_mode_name(mode)).c_str(), fast_path ? "fast path" : "async only",
              depth, static_cast<double>(shared.reads) / elapsed,
              elapsed * 1e6 / static_cast<double>(shared.reads),
              static_cast<unsigned long long>(shared.reads),
              static_cast<unsigned long long>(shared.errors));
}

// The floor: plain pread(2) calls in a loop, no coroutines and no backend.
void run_baseline(int fd, double seconds) {
  std::vector<char> buf(kBlock);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  uint64_t reads = 0;
  auto start = Clock::now();
  auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < deadline) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if (::pread(fd, buf.data(), kBlock, static_cast<off_t>((x % (kFileSize / kBlock)) * kBlock)) !=
        static_cast<ssize_t>(kBlock))
      std::abort();
    ++reads;
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("pread(2) baseline      depth  1: %9.0f IOPS  (%.2f us/read)\n",
              static_cast<double>(reads) / elapsed, elapsed * 1e6 / static_cast<double>(reads));
}

int bench_main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "/dev/shm";
  double seconds = argc > 2 ? std::atof(argv[2]) : 1.0;
  std::string path = dir + "/strata-file-io-bench-XXXXXX";
  std::vector<char> name(path.begin(), path.end());
  name.push_back('\0');
  int fd = ::mkstemp(name.data());
  if (fd < 0) {
    std::perror("mkstemp");
    return 1;
  }
  ::unlink(name.data());
  std::vector<char> chunk(1 << 20, 'x');
  for (uint64_t off = 0; off < kFileSize; off += chunk.size()) {
    if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) !=
        static_cast<ssize_t>(chunk.size())) {
      std::perror("pwrite");
      return 1;
    }
  }
  std::printf("4 KiB random reads from a 64 MiB file in %s, %.1f s per case\n", dir.c_str(),
              seconds);
  run_baseline(fd, seconds);
  for (AioMode mode : {AioMode::kIoUring, AioMode::kThreads}) {
    for (bool fast_path : {true, false}) {
      for (int depth : {1, 16}) run_case(mode, fast_path, depth, fd, seconds);
    }
  }
  ::close(fd);
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::bench_main(argc, argv); }
