// FileIo, run over both backends, each with and without the synchronous fast path.
//
// "Without the fast path" passes direct=true on a buffered fd: the backends make no
// synchronous attempt for direct requests, so every request goes through io_uring or a worker
// thread. The test file lives in /dev/shm; the O_DIRECT test uses /var/tmp (not tmpfs).
#include "strata/file_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "strata/event_loop.h"
#include "test_files.h"

namespace strata {
namespace {

using testing::pattern;
using testing::TempFile;

struct BackendParam {
  AioMode mode;
  bool fast_path;
};

std::string param_name(const ::testing::TestParamInfo<BackendParam>& info) {
  std::string name = info.param.mode == AioMode::kIoUring ? "IoUring" : "Threads";
  return name + (info.param.fast_path ? "" : "NoFastPath");
}

class FileIoTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    ASSERT_GE(file_.fd(), 0) << "cannot create a file in /dev/shm: "
                             << std::strerror(file_.error());
    Result<FileIo*> io = loop_.file_io(GetParam().mode);
    ASSERT_TRUE(io.has_value()) << io.error().message();
    io_ = *io;
    ASSERT_EQ(io_->mode(), GetParam().mode);
  }

  // The `direct` argument for requests on the buffered test file.
  bool no_fast_path() const { return !GetParam().fast_path; }
  int fd() const { return file_.fd(); }

  Result<size_t> write(const IoVec& iov, uint64_t offset, bool fua = false) {
    return run_sync(loop_, io_->pwritev(fd(), iov, offset, no_fast_path(), fua));
  }
  Result<size_t> read(const IoVec& iov, uint64_t offset) {
    return run_sync(loop_, io_->preadv(fd(), iov, offset, no_fast_path()));
  }
  void write_pattern(size_t len, unsigned tag, uint64_t offset) {
    std::vector<char> data = pattern(len, tag);
    ASSERT_EQ(::pwrite(fd(), data.data(), len, static_cast<off_t>(offset)),
              static_cast<ssize_t>(len));
  }

  EventLoop loop_;
  FileIo* io_ = nullptr;
  TempFile file_{"/dev/shm"};
};

TEST_P(FileIoTest, WritesAndReadsBackAtVariousOffsetsWithScatterGatherLists) {
  for (uint64_t offset : {0ull, 1ull, 511ull, 4096ull, 65537ull, (1ull << 20) + 3}) {
    SCOPED_TRACE(offset);
    std::vector<char> a = pattern(100, 1);
    std::vector<char> b = pattern(4096, 2);
    std::vector<char> c = pattern(37, 3);
    IoVec out;
    out.push_back(a.data(), a.size());
    out.push_back(b.data(), b.size());
    out.push_back(c.data(), c.size());
    Result<size_t> written = write(out, offset);
    ASSERT_TRUE(written.has_value()) << written.error().message();
    EXPECT_EQ(*written, out.size());

    // Read back through a list split at different places.
    std::vector<char> head(1000);
    std::vector<char> tail(out.size() - head.size());
    IoVec in;
    in.push_back(head.data(), head.size());
    in.push_back(tail.data(), tail.size());
    Result<size_t> got = read(in, offset);
    ASSERT_TRUE(got.has_value()) << got.error().message();
    EXPECT_EQ(*got, in.size());

    std::vector<char> expected = a;
    expected.insert(expected.end(), b.begin(), b.end());
    expected.insert(expected.end(), c.begin(), c.end());
    std::vector<char> actual = head;
    actual.insert(actual.end(), tail.begin(), tail.end());
    EXPECT_EQ(actual, expected);
  }
}

TEST_P(FileIoTest, ShortReadAtEndOfFileReturnsTheShortCount) {
  write_pattern(10000, 4, 0);
  std::vector<char> buf(4096, 0);
  IoVec iov(buf.data(), buf.size());

  Result<size_t> got = read(iov, 8192);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(*got, 10000u - 8192u);
  std::vector<char> expected = pattern(10000, 4);
  EXPECT_EQ(std::memcmp(buf.data(), expected.data() + 8192, 10000 - 8192), 0);

  Result<size_t> at_end = read(iov, 10000);
  ASSERT_TRUE(at_end.has_value()) << at_end.error().message();
  EXPECT_EQ(*at_end, 0u);

  Result<size_t> past_end = read(iov, 50000);
  ASSERT_TRUE(past_end.has_value()) << past_end.error().message();
  EXPECT_EQ(*past_end, 0u);
}

struct Tally {
  int finished = 0;
  int failed = 0;
  std::string first_error;
};

void note(Tally* tally, const Result<size_t>& r, size_t want) {
  ++tally->finished;
  if (r && *r == want) return;
  ++tally->failed;
  if (tally->first_error.empty())
    tally->first_error = r ? "short transfer " + std::to_string(*r) : r.error().message();
}

Task<void> write_and_note(FileIo* io, int fd, IoVec iov, uint64_t offset, bool direct,
                          Tally* tally) {
  Result<size_t> r = co_await io->pwritev(fd, iov, offset, direct, false);
  note(tally, r, iov.size());
}

Task<void> read_and_check(FileIo* io, int fd, IoVec iov, uint64_t offset, bool direct,
                          const std::vector<char>* expected, Tally* tally) {
  Result<size_t> r = co_await io->preadv(fd, iov, offset, direct);
  std::vector<char> got(iov.size());
  iov.copy_to(0, got.data(), got.size());
  note(tally, got == *expected ? r : Result<size_t>(fail(EIO, "data mismatch")), iov.size());
}

TEST_P(FileIoTest, SixtyFourConcurrentOperationsCompleteCorrectly) {
  constexpr int kOps = 64;
  constexpr size_t kLen = 4096 + 123;
  const auto offset_of = [](int i) { return static_cast<uint64_t>(i) * 5000 + i; };
  std::vector<std::vector<char>> data;
  for (int i = 0; i < kOps; ++i) data.push_back(pattern(kLen, i));

  Tally writes;
  for (int i = 0; i < kOps; ++i) {
    IoVec iov(data[i].data(), kLen);
    spawn(write_and_note(io_, fd(), iov, offset_of(i), no_fast_path(), &writes));
  }
  if (no_fast_path()) {
    EXPECT_EQ(writes.finished, 0) << "requests completed before the loop ran";
  }
  loop_.run();
  EXPECT_EQ(writes.finished, kOps);
  EXPECT_EQ(writes.failed, 0) << writes.first_error;

  std::vector<std::vector<char>> buffers(kOps, std::vector<char>(kLen));
  Tally reads;
  for (int i = 0; i < kOps; ++i) {
    IoVec iov(buffers[i].data(), kLen);
    spawn(read_and_check(io_, fd(), iov, offset_of(i), no_fast_path(), &data[i], &reads));
  }
  if (no_fast_path()) {
    EXPECT_EQ(reads.finished, 0) << "requests completed before the loop ran";
  }
  loop_.run();
  EXPECT_EQ(reads.finished, kOps);
  EXPECT_EQ(reads.failed, 0) << reads.first_error;
}

// More requests than io_uring's queue depth (256) wait in the backlog and still complete.
TEST_P(FileIoTest, ManyMoreRequestsThanTheRingHoldsAllComplete) {
  constexpr int kOps = 600;
  constexpr size_t kLen = 512;
  std::vector<std::vector<char>> expected;
  for (int i = 0; i < kOps; ++i) {
    expected.push_back(pattern(kLen, i));
    ASSERT_EQ(::pwrite(fd(), expected.back().data(), kLen, static_cast<off_t>(i * kLen)),
              static_cast<ssize_t>(kLen));
  }
  std::vector<std::vector<char>> buffers(kOps, std::vector<char>(kLen));
  Tally reads;
  for (int i = 0; i < kOps; ++i) {
    IoVec iov(buffers[i].data(), kLen);
    spawn(read_and_check(io_, fd(), iov, i * kLen, no_fast_path(), &expected[i], &reads));
  }
  loop_.run();
  EXPECT_EQ(reads.finished, kOps);
  EXPECT_EQ(reads.failed, 0) << reads.first_error;
}

// One system call takes at most IOV_MAX (1024) buffers; a longer list transfers what fits in
// one call and reports the short count, like any other short transfer.
TEST_P(FileIoTest, MoreBuffersThanOneCallTakesGiveAShortCount) {
  constexpr size_t kPiece = 7;
  constexpr size_t kCount = 1500;
  std::vector<char> data = pattern(kPiece * kCount, 12);
  IoVec out;
  for (size_t i = 0; i < kCount; ++i) out.push_back(data.data() + i * kPiece, kPiece);
  Result<size_t> written = write(out, 3);
  ASSERT_TRUE(written.has_value()) << written.error().message();
  EXPECT_EQ(*written, IOV_MAX * kPiece);
  EXPECT_EQ(file_.size(), static_cast<int64_t>(3 + IOV_MAX * kPiece));

  std::vector<char> back(kPiece * kCount, 0);
  IoVec in;
  for (size_t i = 0; i < kCount; ++i) in.push_back(back.data() + i * kPiece, kPiece);
  Result<size_t> got = read(in, 3);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(*got, IOV_MAX * kPiece);
  EXPECT_EQ(std::memcmp(back.data(), data.data(), IOV_MAX * kPiece), 0);
}

TEST_P(FileIoTest, FuaWriteCompletesAndReadsBack) {
  std::vector<char> data = pattern(8192, 9);
  Result<size_t> written = write(IoVec(data.data(), data.size()), 4096, /*fua=*/true);
  ASSERT_TRUE(written.has_value()) << written.error().message();
  EXPECT_EQ(*written, data.size());
  std::vector<char> back(data.size());
  ASSERT_EQ(::pread(fd(), back.data(), back.size(), 4096), static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back, data);
}

TEST_P(FileIoTest, FdatasyncSucceedsOnAWrittenFile) {
  write_pattern(4096, 5, 0);
  Result<void> synced = run_sync(loop_, io_->fdatasync(fd()));
  EXPECT_TRUE(synced.has_value()) << synced.error().message();
}

TEST_P(FileIoTest, PunchHoleKeepingSizeReadsBackZeroes) {
  constexpr size_t kSize = 64 * 1024;
  std::vector<char> data(kSize, static_cast<char>(0xab));
  ASSERT_EQ(::pwrite(fd(), data.data(), kSize, 0), static_cast<ssize_t>(kSize));

  Result<void> punched =
      run_sync(loop_, io_->fallocate(fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192));
  ASSERT_TRUE(punched.has_value()) << punched.error().message();
  EXPECT_EQ(file_.size(), static_cast<int64_t>(kSize));

  std::vector<char> back(kSize);
  Result<size_t> got = read(IoVec(back.data(), back.size()), 0);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  ASSERT_EQ(*got, kSize);
  for (size_t i = 0; i < kSize; ++i) {
    char want = (i >= 4096 && i < 4096 + 8192) ? 0 : static_cast<char>(0xab);
    ASSERT_EQ(back[i], want) << "at byte " << i;
  }
}

TEST_P(FileIoTest, FallocateWithoutFlagsExtendsTheFile) {
  Result<void> allocated = run_sync(loop_, io_->fallocate(fd(), 0, 0, 1 << 20));
  ASSERT_TRUE(allocated.has_value()) << allocated.error().message();
  EXPECT_EQ(file_.size(), 1 << 20);
}

TEST_P(FileIoTest, ErrorsCarryTheErrnoAndNameTheCall) {
  char buf[512] = {};
  IoVec iov(buf, sizeof buf);
  const int bad_fd = -1;

  Result<size_t> r = run_sync(loop_, io_->preadv(bad_fd, iov, 0, no_fast_path()));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().err(), EBADF);
  EXPECT_EQ(r.error().message(), "preadv: Bad file descriptor");

  Result<size_t> w = run_sync(loop_, io_->pwritev(bad_fd, iov, 0, no_fast_path(), false));
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().err(), EBADF);
  EXPECT_EQ(w.error().message(), "pwritev: Bad file descriptor");

  Result<void> s = run_sync(loop_, io_->fdatasync(bad_fd));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().err(), EBADF);
  EXPECT_EQ(s.error().message(), "fdatasync: Bad file descriptor");

  Result<void> f = run_sync(loop_, io_->fallocate(bad_fd, 0, 0, 4096));
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().err(), EBADF);
  EXPECT_EQ(f.error().message(), "fallocate: Bad file descriptor");
}

TEST_P(FileIoTest, WriteToAReadOnlyDescriptorFailsWithEbadf) {
  int ro = ::open(file_.path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(ro, 0);
  char buf[512] = {};
  Result<size_t> w =
      run_sync(loop_, io_->pwritev(ro, IoVec(buf, sizeof buf), 0, no_fast_path(), false));
  ::close(ro);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().err(), EBADF);
}

TEST_P(FileIoTest, ReadingADirectoryFailsWithEisdir) {
  int dir = ::open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0);
  char buf[512] = {};
  Result<size_t> r = run_sync(loop_, io_->preadv(dir, IoVec(buf, sizeof buf), 0, no_fast_path()));
  ::close(dir);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().err(), EISDIR);
  EXPECT_EQ(r.error().message(), "preadv: Is a directory");
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

TEST_P(FileIoTest, DirectIoOnADiskFile) {
  TempFile disk_file("/var/tmp");
  ASSERT_GE(disk_file.fd(), 0) << std::strerror(disk_file.error());
  int fd = ::open(disk_file.path().c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0 && errno == EINVAL) {
    GTEST_SKIP() << "the file system of /var/tmp refuses O_DIRECT, so direct I/O is not tested";
  }
  ASSERT_GE(fd, 0) << std::strerror(errno);

  constexpr size_t kAlign = 4096;
  std::unique_ptr<char, FreeDeleter> out(
      static_cast<char*>(std::aligned_alloc(kAlign, 3 * kAlign)));
  std::unique_ptr<char, FreeDeleter> in(static_cast<char*>(std::aligned_alloc(kAlign, 3 * kAlign)));
  std::vector<char> data = pattern(3 * kAlign, 11);
  std::memcpy(out.get(), data.data(), data.size());
  std::memset(in.get(), 0, 3 * kAlign);

  IoVec out_iov;
  out_iov.push_back(out.get(), kAlign);
  out_iov.push_back(out.get() + kAlign, 2 * kAlign);
  Result<size_t> written = run_sync(loop_, io_->pwritev(fd, out_iov, kAlign, true, false));
  ASSERT_TRUE(written.has_value()) << written.error().message();
  EXPECT_EQ(*written, 3 * kAlign);

  Result<size_t> got = run_sync(loop_, io_->preadv(fd, IoVec(in.get(), 3 * kAlign), kAlign, true));
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(*got, 3 * kAlign);
  EXPECT_EQ(std::memcmp(in.get(), data.data(), data.size()), 0);

  // A misaligned direct read is refused by the kernel, and the errno comes through.
  Result<size_t> misaligned =
      run_sync(loop_, io_->preadv(fd, IoVec(in.get() + 1, kAlign), 1, true));
  ASSERT_FALSE(misaligned.has_value());
  EXPECT_EQ(misaligned.error().err(), EINVAL);
  EXPECT_EQ(misaligned.error().message(), "preadv: Invalid argument");
  ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(Backends, FileIoTest,
                         ::testing::Values(BackendParam{AioMode::kIoUring, true},
                                           BackendParam{AioMode::kIoUring, false},
                                           BackendParam{AioMode::kThreads, true},
                                           BackendParam{AioMode::kThreads, false}),
                         param_name);

}  // namespace
}  // namespace strata
