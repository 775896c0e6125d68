// The synchronous fast path both backends try first, and the conversion of system call results
// to Results.
#include "sync_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "test_files.h"

namespace strata {
namespace {

using testing::pattern;
using testing::TempFile;

bool on_tmpfs(int fd) {
  struct statfs fs {};
  return fstatfs(fd, &fs) == 0 && fs.f_type == TMPFS_MAGIC;
}

TEST(IoResult, CountsAndErrors) {
  struct Case {
    ssize_t res;
    bool ok;
    int err;
    const char* message;
  };
  for (const Case& c : {Case{0, true, 0, ""}, Case{4096, true, 0, ""},
                        Case{-EBADF, false, EBADF, "preadv: Bad file descriptor"},
                        Case{-ENOSPC, false, ENOSPC, "preadv: No space left on device"}}) {
    Result<size_t> r = io_count_result(c.res, "preadv");
    ASSERT_EQ(r.has_value(), c.ok) << c.res;
    if (c.ok) {
      EXPECT_EQ(*r, static_cast<size_t>(c.res));
    } else {
      EXPECT_EQ(r.error().err(), c.err);
      EXPECT_EQ(r.error().message(), c.message);
    }
  }
  EXPECT_TRUE(io_void_result(0, "fdatasync").has_value());
  Result<void> failed = io_void_result(-EIO, "fdatasync");
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().message(), "fdatasync: Input/output error");
}

// tmpfs keeps its data in memory: reads and writes are done on the spot even where the kernel
// does not support RWF_NOWAIT for it.
TEST(SyncFastPath, TmpfsRequestsAreDoneSynchronously) {
  TempFile file("/dev/shm");
  ASSERT_GE(file.fd(), 0);
  if (!on_tmpfs(file.fd())) GTEST_SKIP() << "/dev/shm is not tmpfs here";
  SyncFastPath fast;

  std::vector<char> data = pattern(8192, 1);
  std::optional<ssize_t> written =
      fast.try_pwritev(file.fd(), IoVec(data.data(), data.size()), 100, false);
  ASSERT_TRUE(written.has_value());
  EXPECT_EQ(*written, 8192);

  std::optional<ssize_t> fua =
      fast.try_pwritev(file.fd(), IoVec(data.data(), 512), 100 + 8192, true);
  ASSERT_TRUE(fua.has_value());
  EXPECT_EQ(*fua, 512);

  std::vector<char> back(8192);
  std::optional<ssize_t> got = fast.try_preadv(file.fd(), IoVec(back.data(), back.size()), 100);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, 8192);
  EXPECT_EQ(back, data);
}

// On a disk file system, a read the page cache can serve is done on the spot; one that would
// need the device, or a FUA write, is left to the asynchronous path.
TEST(SyncFastPath, DiskFileCachedReadIsSynchronousButFuaWriteIsNot) {
  TempFile file("/var/tmp");
  ASSERT_GE(file.fd(), 0);
  if (on_tmpfs(file.fd())) GTEST_SKIP() << "/var/tmp is tmpfs here";
  std::vector<char> data = pattern(4096, 2);
  ASSERT_EQ(::pwrite(file.fd(), data.data(), data.size(), 0), 4096);  // now in the page cache
  SyncFastPath fast;

  std::vector<char> back(4096);
  std::optional<ssize_t> got = fast.try_preadv(file.fd(), IoVec(back.data(), back.size()), 0);
  ASSERT_TRUE(got.has_value()) << "a page-cache hit should not need the asynchronous path";
  EXPECT_EQ(*got, 4096);
  EXPECT_EQ(back, data);

  // At end of file RWF_NOWAIT answers 0, which the asynchronous path confirms.
  EXPECT_FALSE(fast.try_preadv(file.fd(), IoVec(back.data(), back.size()), 8192).has_value());

  EXPECT_FALSE(fast.try_pwritev(file.fd(), IoVec(data.data(), data.size()), 0, true).has_value());
}

// A remembered in-memory file is checked again before use: its fd number may have been closed
// and given to a file on a disk, whose I/O must not be done on the loop.
TEST(SyncFastPath, ReusedFdNumberIsNotTakenForTheRememberedMemoryFile) {
  TempFile memory("/dev/shm");
  TempFile disk("/var/tmp");
  ASSERT_GE(memory.fd(), 0);
  ASSERT_GE(disk.fd(), 0);
  if (!on_tmpfs(memory.fd()) || on_tmpfs(disk.fd())) {
    GTEST_SKIP() << "needs /dev/shm on tmpfs and /var/tmp on a disk file system";
  }
  SyncFastPath fast;
  char buf[512] = {};
  // A FUA write makes no RWF_NOWAIT attempt, so only the in-memory check decides.
  ASSERT_TRUE(fast.try_pwritev(memory.fd(), IoVec(buf, sizeof buf), 0, true).has_value());

  // The same fd number now names the disk file.
  int saved = ::dup(memory.fd());
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(disk.fd(), memory.fd()), memory.fd());
  EXPECT_FALSE(fast.try_pwritev(memory.fd(), IoVec(buf, sizeof buf), 0, true).has_value());
  ASSERT_EQ(::dup2(saved, memory.fd()), memory.fd());
  ::close(saved);

  // Back on the memory file, it is found again.
  EXPECT_TRUE(fast.try_pwritev(memory.fd(), IoVec(buf, sizeof buf), 0, true).has_value());
}

// A registered file is checked once: its owner promises the fd stays on that file until it is
// forgotten, so no request pays for an fstat(). (The test breaks the promise on purpose to show
// that nothing is checked any more, then keeps it again.)
TEST(SyncFastPath, RegisteredMemoryFileIsTrustedUntilForgotten) {
  TempFile memory("/dev/shm");
  TempFile disk("/var/tmp");
  ASSERT_GE(memory.fd(), 0);
  ASSERT_GE(disk.fd(), 0);
  if (!on_tmpfs(memory.fd()) || on_tmpfs(disk.fd())) {
    GTEST_SKIP() << "needs /dev/shm on tmpfs and /var/tmp on a disk file system";
  }
  SyncFastPath fast;
  char buf[512] = {};
  fast.register_file(disk.fd());  // not in memory: registering changes nothing
  EXPECT_FALSE(fast.try_pwritev(disk.fd(), IoVec(buf, sizeof buf), 0, true).has_value());

  fast.register_file(memory.fd());
  int saved = ::dup(memory.fd());
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(disk.fd(), memory.fd()), memory.fd());
  EXPECT_TRUE(fast.try_pwritev(memory.fd(), IoVec(buf, sizeof buf), 0, true).has_value());
  fast.forget_file(memory.fd());
  EXPECT_FALSE(fast.try_pwritev(memory.fd(), IoVec(buf, sizeof buf), 0, true).has_value());
  ASSERT_EQ(::dup2(saved, memory.fd()), memory.fd());
  ::close(saved);
}

// Device nodes live on devtmpfs, which reports itself as tmpfs, but their I/O goes to the
// device: it must not be done synchronously on the loop. (/dev/null stands in for a disk here,
// harmlessly; a FUA write skips the RWF_NOWAIT attempt and reaches the in-memory check.)
TEST(SyncFastPath, DeviceNodesOnDevtmpfsAreNotTakenForMemoryFiles) {
  int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  if (!on_tmpfs(fd)) {
    ::close(fd);
    GTEST_SKIP() << "/dev is not devtmpfs here";
  }
  SyncFastPath fast;
  char buf[64] = {};
  EXPECT_FALSE(fast.try_pwritev(fd, IoVec(buf, sizeof buf), 0, true).has_value());
  ::close(fd);
}

TEST(SyncFastPath, ErrorsAreLeftToTheAsynchronousPath) {
  SyncFastPath fast;
  char buf[64];
  EXPECT_FALSE(fast.try_preadv(-1, IoVec(buf, sizeof buf), 0).has_value());
  EXPECT_FALSE(fast.try_pwritev(-1, IoVec(buf, sizeof buf), 0, false).has_value());
}

}  // namespace
}  // namespace strata
