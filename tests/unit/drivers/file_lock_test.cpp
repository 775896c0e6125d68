// Image locks: the byte layout and checks of protocol/file_lock.h, between two open files of
// one image (OFD locks make two descriptors behave like two processes), and against qemu-img.
#include "protocol/file_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace strata {
namespace {

class FileLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/strata-lock-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    path_ = tmpl;
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    close(fd);
    a_ = open(path_.c_str(), O_RDWR);
    b_ = open(path_.c_str(), O_RDWR);
    ASSERT_GE(a_, 0);
    ASSERT_GE(b_, 0);
  }
  void TearDown() override {
    close(a_);
    close(b_);
    unlink(path_.c_str());
  }

  // True if byte `n` is locked by an open file other than `fd`.
  static bool locked(int fd, int n) {
    struct flock fl {};
    fl.l_whence = SEEK_SET;
    fl.l_start = n;
    fl.l_len = 1;
    fl.l_type = F_WRLCK;
    EXPECT_EQ(fcntl(fd, F_OFD_GETLK, &fl), 0);
    return fl.l_type != F_UNLCK;
  }

  std::string path_;
  int a_ = -1;
  int b_ = -1;
};

const Perm kRW = Perm::kConsistentRead | Perm::kWrite;
const Perm kReaderShares = Perm::kConsistentRead | Perm::kWriteUnchanged;

TEST_F(FileLockTest, ByteLayoutMatchesQemu) {
  ASSERT_TRUE(file_lock::supported(a_));
  ASSERT_TRUE(file_lock::apply(a_, kRW, kReaderShares, true));
  // Uses consistent read (100) and write (101); does not share write (201) or resize (203).
  EXPECT_TRUE(locked(b_, 100));
  EXPECT_TRUE(locked(b_, 101));
  EXPECT_FALSE(locked(b_, 102));
  EXPECT_FALSE(locked(b_, 103));
  EXPECT_FALSE(locked(b_, 200));
  EXPECT_TRUE(locked(b_, 201));
  EXPECT_FALSE(locked(b_, 202));
  EXPECT_TRUE(locked(b_, 203));
  // Its own probes do not see its own locks.
  EXPECT_FALSE(locked(a_, 101));
}

TEST_F(FileLockTest, ChecksNameThePermissionAndTheImage) {
  ASSERT_TRUE(file_lock::apply(a_, kRW, kReaderShares, true));
  auto want_write = file_lock::check(b_, kRW, Perm::kAll, path_);
  ASSERT_FALSE(want_write);
  EXPECT_EQ(want_write.error().message(), "Failed to get \"write\" lock");
  EXPECT_EQ(want_write.error().hint(), "Is another process using the image [" + path_ + "]?");
  EXPECT_EQ(want_write.error().err(), EAGAIN);

  auto refuse_write = file_lock::check(b_, Perm::kConsistentRead, kReaderShares, path_);
  ASSERT_FALSE(refuse_write);
  EXPECT_EQ(refuse_write.error().message(), "Failed to get shared \"write\" lock");

  // A reader that shares everything coexists.
  EXPECT_TRUE(file_lock::check(b_, Perm::kConsistentRead, Perm::kAll, path_));
}

TEST_F(FileLockTest, PrepareAddsCommitSetsExactly) {
  ASSERT_TRUE(file_lock::apply(a_, Perm::kConsistentRead, Perm::kAll, true));
  // Prepare for a writer: the union is held, nothing is dropped yet.
  ASSERT_TRUE(file_lock::apply(a_, kRW, kReaderShares, false));
  EXPECT_TRUE(locked(b_, 100));
  EXPECT_TRUE(locked(b_, 101));
  // Abort back to the reader: exactly the old set.
  ASSERT_TRUE(file_lock::apply(a_, Perm::kConsistentRead, Perm::kAll, true));
  EXPECT_TRUE(locked(b_, 100));
  EXPECT_FALSE(locked(b_, 101));
  EXPECT_FALSE(locked(b_, 201));
  // Releasing everything leaves no byte locked.
  ASSERT_TRUE(file_lock::apply(a_, Perm::kNone, Perm::kAll, true));
  for (int n : {100, 101, 102, 103, 200, 201, 202, 203}) EXPECT_FALSE(locked(b_, n)) << n;
}

TEST_F(FileLockTest, LocksFollowTheOpenFileNotTheProcess) {
  // A second descriptor of the same open file (dup) shares its locks; closing one of two
  // open files drops only that one's locks. The file driver relies on this when it moves its
  // locks to a new descriptor before closing the old one.
  int c = open(path_.c_str(), O_RDONLY);
  ASSERT_GE(c, 0);
  ASSERT_TRUE(file_lock::apply(a_, kRW, kReaderShares, true));
  ASSERT_TRUE(file_lock::apply(c, kRW, kReaderShares, true));
  close(a_);
  a_ = open(path_.c_str(), O_RDONLY);
  EXPECT_TRUE(locked(b_, 101));  // still held through c
  close(c);
  EXPECT_FALSE(locked(b_, 101));
}

bool have_qemu_img() { return std::system("command -v qemu-img >/dev/null 2>&1") == 0; }

// Makes the test file a qcow2 image: a qcow2 node does not share write on its file, so it takes
// the 2xx bytes that make conflicts visible in both directions.
void make_qcow2(const std::string& path) {
  std::string cmd = "qemu-img create -q -f qcow2 '" + path + "' 1M";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
}

TEST_F(FileLockTest, QemuImgSeesStrataWriterLocks) {
  ASSERT_TRUE(have_qemu_img()) << "qemu-img (Debian qemu-utils) is required";
  make_qcow2(path_);
  ASSERT_TRUE(file_lock::apply(a_, kRW | Perm::kResize, kReaderShares, true));
  std::string cmd = "qemu-img info -f qcow2 '" + path_ + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int status = pclose(p);
  EXPECT_NE(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("Failed to get shared \"write\" lock"), std::string::npos) << out;
  // -U (force-share) is let through.
  std::string shared_cmd = "qemu-img info -U -f qcow2 '" + path_ + "' >/dev/null 2>&1";
  EXPECT_EQ(std::system(shared_cmd.c_str()), 0);
}

TEST_F(FileLockTest, StrataSeesQemuIoWriterLocks) {
  ASSERT_TRUE(have_qemu_img()) << "qemu-io (Debian qemu-utils) is required";
  make_qcow2(path_);
  // qemu-io holds the image writable while it sleeps: it uses 100, 101, 103 and does not share
  // write or resize (201, 203).
  std::string cmd = "qemu-io -f qcow2 -c 'sleep 3000' '" + path_ + "' >/dev/null 2>&1 & echo $!";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  int pid = 0;
  ASSERT_EQ(fscanf(p, "%d", &pid), 1);
  pclose(p);
  bool seen = false;
  for (int i = 0; i < 200 && !seen; ++i) {
    seen = locked(b_, 201);
    if (!seen) usleep(10000);
  }
  ASSERT_TRUE(seen) << "qemu-io did not take its write lock";
  auto r = file_lock::check(b_, kRW, Perm::kAll, path_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Failed to get \"write\" lock");
  auto r2 = file_lock::check(b_, Perm::kConsistentRead, kReaderShares, path_);
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().message(), "Failed to get shared \"write\" lock");
  // A reader that shares everything is fine beside it.
  EXPECT_TRUE(file_lock::check(b_, Perm::kConsistentRead, Perm::kAll, path_));
  kill(pid, SIGTERM);
}

}  // namespace
}  // namespace strata
