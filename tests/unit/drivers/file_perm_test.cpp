// The file driver's permission transactions: image locks and dynamic auto-read-only.
//
// Nodes are opened through a real Engine. The driver-level tests call check_perm / set_perm /
// abort_perm_update directly on a node without parents; the graph tests attach users and let
// the core's permission refresh do it. What the tests look at is what other processes see:
// the access mode of the node's descriptors (/proc/self/fdinfo) and the lock bytes, probed with
// F_OFD_GETLK from other open files of the image. Read-only storage is a read-only bind mount
// (the tests run as root, where file modes do not stop writes). The interop tests run qemu-img
// and qemu-io against the same image.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"

extern char** environ;

namespace strata {
namespace {

using nlohmann::json;

constexpr Perm kRead = Perm::kConsistentRead;
constexpr Perm kReadWrite = Perm::kConsistentRead | Perm::kWrite;
// What a writable qcow2 node asks of its file, and what it shares: it never shares write or
// resize of its metadata.
constexpr Perm kFormatWriter = Perm::kConsistentRead | Perm::kWrite | Perm::kResize;
constexpr Perm kFormatShares = Perm::kConsistentRead | Perm::kWriteUnchanged;
// The lock bytes of (kFormatWriter, kFormatShares): uses 0, 1, 3; does not share 1, 3.
const std::vector<int> kFormatWriterBytes = {100, 101, 103, 201, 203};

// One descriptor of this process and its open(2) flags.
struct OpenFd {
  int fd;
  int flags;
  bool read_write() const { return (flags & O_ACCMODE) == O_RDWR; }
};

// This process's descriptors for `path`, lowest number first.
std::vector<OpenFd> descriptors_of(const std::string& path) {
  std::vector<OpenFd> out;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::string link = std::string("/proc/self/fd/") + entry->d_name;
    char target[4096];
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n < 0 || std::string(target, n) != path) continue;
    std::ifstream info(std::string("/proc/self/fdinfo/") + entry->d_name);
    std::string key;
    while (info >> key) {
      if (key != "flags:") continue;
      std::string octal;
      info >> octal;
      out.push_back({std::atoi(entry->d_name), std::stoi(octal, nullptr, 8)});
      break;
    }
  }
  closedir(dir);
  std::sort(out.begin(), out.end(), [](OpenFd a, OpenFd b) { return a.fd < b.fd; });
  return out;
}

// The lock bytes of QEMU's layout that an open file other than `probe_fd`'s holds.
std::vector<int> bytes_held_against(int probe_fd) {
  std::vector<int> held;
  for (int byte : {100, 101, 102, 103, 200, 201, 202, 203}) {
    struct flock fl {};
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_type = F_WRLCK;
    EXPECT_EQ(fcntl(probe_fd, F_OFD_GETLK, &fl), 0) << std::strerror(errno);
    if (fl.l_type != F_UNLCK) held.push_back(byte);
  }
  return held;
}

// The lock bytes anyone holds on `path`, seen from a new open file of it.
std::vector<int> bytes_held(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path << ": " << std::strerror(errno);
  if (fd < 0) return {};
  std::vector<int> held = bytes_held_against(fd);
  close(fd);
  return held;
}

class FilePermTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/strata-perm-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    ASSERT_EQ(mkdir((dir_ + "/rw").c_str(), 0755), 0);
    image_ = dir_ + "/rw/img";
    std::ofstream(image_).close();
    ASSERT_EQ(truncate(image_.c_str(), 1 << 20), 0);
  }
  void TearDown() override {
    engine_.reset();  // closes the nodes' descriptors
    if (!view_.empty()) umount2(view_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  Result<Node*> try_open(json options) {
    options["driver"] = "file";
    if (!options.contains("filename")) options["filename"] = image_;
    return run_sync(loop_, engine_->add_node(std::move(options)));
  }
  // An auto-read-only file node on the image, as libvirt configures it.
  Node* open_auto(const std::string& name = "f0", json extra = json::object()) {
    extra["node-name"] = name;
    extra["auto-read-only"] = true;
    auto node = try_open(std::move(extra));
    EXPECT_TRUE(node) << node.error().message();
    return node ? *node : nullptr;
  }
  // The node's single descriptor on `path`. REQUIRES: no other node has the file open.
  static OpenFd only_descriptor(const std::string& path) {
    auto fds = descriptors_of(path);
    EXPECT_EQ(fds.size(), 1u);
    return fds.empty() ? OpenFd{-1, 0} : fds[0];
  }
  // check_perm then set_perm, as a successful transaction does.
  static void commit(Node* node, Perm perm, Perm shared) {
    auto r = node->driver().check_perm(perm, shared);
    ASSERT_TRUE(r) << r.error().message();
    node->driver().set_perm(perm, shared);
  }
  // Makes dir_/ro a read-only view of dir_/rw; returns false if the mount cannot be made.
  bool make_read_only_view() {
    view_ = dir_ + "/ro";
    if (mkdir(view_.c_str(), 0755) != 0) return false;
    if (mount((dir_ + "/rw").c_str(), view_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      why_no_view_ = std::string("bind mount: ") + std::strerror(errno);
      view_.clear();
      return false;
    }
    if (mount(nullptr, view_.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      why_no_view_ = std::string("read-only remount: ") + std::strerror(errno);
      return false;
    }
    return true;
  }

  std::string dir_;
  std::string image_;
  std::string view_;  // a read-only bind mount of dir_/rw, once made
  std::string why_no_view_;
  EventLoop loop_;
  std::unique_ptr<Engine> engine_ = std::make_unique<Engine>(loop_, builtin_drivers());
};

// ---- driver level: the descriptor ----

TEST_F(FilePermTest, OpenModeFollowsReadOnlyAndAutoReadOnly) {
  struct Case {
    bool read_only;
    bool auto_read_only;
    bool read_write;
  };
  const Case cases[] = {
      {false, false, true}, {true, false, false}, {false, true, false}, {true, true, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "read-only=" << c.read_only << " auto-read-only=" << c.auto_read_only);
    auto node = try_open({{"read-only", c.read_only}, {"auto-read-only", c.auto_read_only}});
    ASSERT_TRUE(node) << node.error().message();
    EXPECT_EQ(only_descriptor(image_).read_write(), c.read_write);
    EXPECT_EQ((*node)->driver().storage_read_write(), c.read_write);
    EXPECT_TRUE(bytes_held(image_).empty()) << "a node without parents holds no locks";
    ASSERT_TRUE(run_sync(loop_, engine_->delete_node((*node)->name())));
  }
}

TEST_F(FilePermTest, WritersSwitchTheDescriptorReadWriteAndBack) {
  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  commit(node, kRead, Perm::kAll);
  const OpenFd first = only_descriptor(image_);
  EXPECT_FALSE(first.read_write());
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100}));

  // Prepare: a read-write descriptor beside the read-only one; both hold the union of the old
  // and the new locks (each sees the other's), and nothing has switched yet.
  ASSERT_TRUE(node->driver().check_perm(kFormatWriter, kFormatShares));
  auto both = descriptors_of(image_);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].fd, first.fd);
  EXPECT_FALSE(both[0].read_write());
  EXPECT_TRUE(both[1].read_write());
  EXPECT_EQ(bytes_held_against(both[0].fd), kFormatWriterBytes);
  EXPECT_EQ(bytes_held_against(both[1].fd), kFormatWriterBytes);
  EXPECT_FALSE(node->driver().storage_read_write());

  // Commit: one descriptor, read-write, under the old number; exactly the new locks.
  node->driver().set_perm(kFormatWriter, kFormatShares);
  const OpenFd writable = only_descriptor(image_);
  EXPECT_EQ(writable.fd, first.fd);
  EXPECT_TRUE(writable.read_write());
  EXPECT_TRUE(node->driver().storage_read_write());
  EXPECT_EQ(bytes_held(image_), kFormatWriterBytes);

  // The last writer leaves: back to read-only the same way.
  ASSERT_TRUE(node->driver().check_perm(kRead, Perm::kAll));
  both = descriptors_of(image_);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_TRUE(both[0].read_write());
  EXPECT_FALSE(both[1].read_write());
  EXPECT_EQ(bytes_held_against(both[0].fd), kFormatWriterBytes);
  EXPECT_EQ(bytes_held_against(both[1].fd), kFormatWriterBytes);
  node->driver().set_perm(kRead, Perm::kAll);
  EXPECT_FALSE(only_descriptor(image_).read_write());
  EXPECT_FALSE(node->driver().storage_read_write());
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100}));
}

TEST_F(FilePermTest, EveryWritePermissionNeedsWriteAccess) {
  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  for (Perm p : {Perm::kWrite, Perm::kWriteUnchanged, Perm::kResize, Perm::kConsistentRead}) {
    SCOPED_TRACE(perm_names(p));
    ASSERT_TRUE(node->driver().check_perm(p, Perm::kAll));
    bool wants_write = has_any(p, kWritePerms);
    auto fds = descriptors_of(image_);
    ASSERT_EQ(fds.size(), wants_write ? 2u : 1u);
    EXPECT_EQ(fds.back().read_write(), wants_write);
    node->driver().abort_perm_update();
  }
}

TEST_F(FilePermTest, ReadOnlyAndReadWriteNodesNeverSwitch) {
  auto rw = try_open({{"node-name", "rw"}});
  ASSERT_TRUE(rw) << rw.error().message();
  commit(*rw, Perm::kNone, Perm::kAll);
  EXPECT_TRUE(only_descriptor(image_).read_write());
  ASSERT_TRUE(run_sync(loop_, engine_->delete_node("rw")));

  auto ro = try_open({{"node-name", "ro"}, {"read-only", true}});
  ASSERT_TRUE(ro) << ro.error().message();
  // The core refuses WRITE on a read-only node; RESIZE alone reaches the driver.
  commit(*ro, kRead | Perm::kResize, Perm::kAll);
  EXPECT_FALSE(only_descriptor(image_).read_write());
  EXPECT_FALSE((*ro)->driver().storage_read_write());
}

TEST_F(FilePermTest, AbortLeavesTheDescriptorAndLocksAsTheyWere) {
  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  commit(node, kRead, kFormatShares);
  const OpenFd before = only_descriptor(image_);
  const std::vector<int> locks_before = {100, 201, 203};
  ASSERT_EQ(bytes_held(image_), locks_before);

  ASSERT_TRUE(node->driver().check_perm(kFormatWriter, kFormatShares));
  ASSERT_EQ(descriptors_of(image_).size(), 2u);
  node->driver().abort_perm_update();
  const OpenFd after = only_descriptor(image_);
  EXPECT_EQ(after.fd, before.fd);
  EXPECT_FALSE(after.read_write());
  EXPECT_FALSE(node->driver().storage_read_write());
  EXPECT_EQ(bytes_held(image_), locks_before);

  // Abort without a prepare does nothing.
  node->driver().abort_perm_update();
  EXPECT_EQ(only_descriptor(image_).fd, before.fd);
  EXPECT_EQ(bytes_held(image_), locks_before);
}

// ---- driver level: locks ----

TEST_F(FilePermTest, LockingOffTakesNoLocks) {
  Node* node = open_auto("f0", {{"locking", "off"}});
  ASSERT_NE(node, nullptr);
  commit(node, kFormatWriter, kFormatShares);
  EXPECT_TRUE(only_descriptor(image_).read_write()) << "auto-read-only works without locks";
  EXPECT_TRUE(bytes_held(image_).empty());
  // Nor does it see anybody else's.
  auto other = try_open({{"node-name", "f1"}, {"locking", "on"}});
  ASSERT_TRUE(other) << other.error().message();
  commit(*other, kFormatWriter, kFormatShares);
  EXPECT_EQ(bytes_held(image_), kFormatWriterBytes);
  EXPECT_TRUE(node->driver().check_perm(kFormatWriter, kFormatShares));
  node->driver().abort_perm_update();
}

TEST_F(FilePermTest, LockingOnTakesLocks) {
  auto node = try_open({{"node-name", "f0"}, {"locking", "on"}});
  ASSERT_TRUE(node) << node.error().message();
  commit(*node, kReadWrite, Perm::kAll);
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100, 101}));
  commit(*node, Perm::kNone, Perm::kAll);
  EXPECT_TRUE(bytes_held(image_).empty());
}

TEST_F(FilePermTest, ConflictsBetweenTwoNodesUseQemuTexts) {
  auto writer = try_open({{"node-name", "writer"}});
  ASSERT_TRUE(writer) << writer.error().message();
  commit(*writer, kFormatWriter, kFormatShares);
  Node* reader = open_auto("reader");
  ASSERT_NE(reader, nullptr);
  commit(reader, kRead, Perm::kAll);

  auto want_write = reader->driver().check_perm(kReadWrite, Perm::kAll);
  ASSERT_FALSE(want_write);
  EXPECT_EQ(want_write.error().message(), "Failed to get \"write\" lock");
  EXPECT_EQ(want_write.error().hint(), "Is another process using the image [" + image_ + "]?");
  EXPECT_EQ(want_write.error().err(), EAGAIN);

  auto refuse_write = reader->driver().check_perm(kRead, kFormatShares);
  ASSERT_FALSE(refuse_write);
  EXPECT_EQ(refuse_write.error().message(), "Failed to get shared \"write\" lock");
  EXPECT_EQ(refuse_write.error().hint(), want_write.error().hint());

  // The failed prepares left the reader as it was: read-only, holding only byte 100 (seen from
  // the writer's open file, which ignores its own locks).
  EXPECT_FALSE(reader->driver().storage_read_write());
  auto fds = descriptors_of(image_);
  ASSERT_EQ(fds.size(), 2u);
  const OpenFd& writer_fd = fds[0].read_write() ? fds[0] : fds[1];
  EXPECT_EQ(bytes_held_against(writer_fd.fd), (std::vector<int>{100}));

  // A reader that shares everything coexists.
  EXPECT_TRUE(reader->driver().check_perm(kRead, Perm::kAll));
  reader->driver().set_perm(kRead, Perm::kAll);
}

TEST_F(FilePermTest, ASwitchIsNotInConflictWithTheNodesOwnLocks) {
  // The node does not share write (byte 201) and now wants to write: probing for 201 must not
  // find the node's own lock, neither on its old descriptor nor on the new one.
  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  commit(node, kRead, kFormatShares);
  auto r = node->driver().check_perm(kFormatWriter, kFormatShares);
  ASSERT_TRUE(r) << r.error().message();
  node->driver().set_perm(kFormatWriter, kFormatShares);
  EXPECT_TRUE(node->driver().storage_read_write());
  EXPECT_EQ(bytes_held(image_), kFormatWriterBytes);
}

// ---- read-only storage ----

class FilePermReadOnlyStorageTest : public FilePermTest {
 protected:
  void SetUp() override {
    FilePermTest::SetUp();
    if (HasFatalFailure()) return;
    if (!make_read_only_view()) GTEST_SKIP() << "no read-only bind mount: " << why_no_view_;
    ro_image_ = view_ + "/img";
  }
  std::string ro_image_;
};

TEST_F(FilePermReadOnlyStorageTest, AutoReadOnlyOpensWhereReadWriteCannot) {
  auto rw = try_open({{"node-name", "rw"}, {"filename", ro_image_}});
  ASSERT_FALSE(rw);
  EXPECT_EQ(rw.error().message(), "Could not open '" + ro_image_ + "': Read-only file system");
  EXPECT_EQ(rw.error().err(), EROFS);

  Node* node = open_auto("f0", {{"filename", ro_image_}});
  ASSERT_NE(node, nullptr);
  EXPECT_FALSE(only_descriptor(ro_image_).read_write());
}

TEST_F(FilePermReadOnlyStorageTest, SwitchFailsAndLeavesTheReadOnlyDescriptorAndLocks) {
  Node* node = open_auto("f0", {{"filename", ro_image_}});
  ASSERT_NE(node, nullptr);
  commit(node, kRead, Perm::kAll);
  const OpenFd before = only_descriptor(ro_image_);

  auto r = node->driver().check_perm(kReadWrite, Perm::kAll);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "Block node 'f0' is read-only because of auto-read-only=on and its storage refuses "
            "write access: Could not open '" +
                ro_image_ + "' read-write: Read-only file system");
  EXPECT_EQ(r.error().err(), EROFS);

  const OpenFd after = only_descriptor(ro_image_);
  EXPECT_EQ(after.fd, before.fd);
  EXPECT_FALSE(after.read_write());
  EXPECT_FALSE(node->driver().storage_read_write());
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100}));
}

// ---- through the graph ----

TEST_F(FilePermTest, AttachingAWriterSwitchesTheNodeAndDetachingSwitchesBack) {
  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  auto reader = engine_->attach_backend(*node, "reader", kRead, Perm::kAll);
  ASSERT_TRUE(reader) << reader.error().message();
  EXPECT_FALSE(only_descriptor(image_).read_write());
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100}));

  auto writer = engine_->attach_backend(*node, "", kReadWrite, Perm::kAll);
  ASSERT_TRUE(writer) << writer.error().message();
  EXPECT_TRUE(only_descriptor(image_).read_write());
  EXPECT_TRUE(node->driver().storage_read_write());
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100, 101}));
  std::vector<uint8_t> data(4096, 0x5a);
  auto w = run_sync(loop_, (*writer)->write(0, data.size(), IoVec(data.data(), data.size())));
  EXPECT_TRUE(w) << w.error().message();

  writer->reset();
  EXPECT_FALSE(only_descriptor(image_).read_write());
  EXPECT_FALSE(node->driver().storage_read_write());
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100}));
  reader->reset();
  EXPECT_TRUE(bytes_held(image_).empty());
}

TEST_F(FilePermReadOnlyStorageTest, AttachingAWriterFailsAndLeavesTheGraphAlone) {
  Node* node = open_auto("f0", {{"filename", ro_image_}});
  ASSERT_NE(node, nullptr);
  auto reader = engine_->attach_backend(*node, "reader", kRead, Perm::kAll);
  ASSERT_TRUE(reader) << reader.error().message();

  auto writer = engine_->attach_backend(*node, "", kReadWrite, Perm::kAll);
  ASSERT_FALSE(writer);
  EXPECT_EQ(writer.error().message(),
            "Block node 'f0' is read-only because of auto-read-only=on and its storage refuses "
            "write access: Could not open '" +
                ro_image_ + "' read-write: Read-only file system");
  EXPECT_EQ(node->parents().size(), 1u);
  EXPECT_EQ(node->cumulative_perm(), kRead);
  EXPECT_FALSE(only_descriptor(ro_image_).read_write());
  EXPECT_EQ(bytes_held(image_), (std::vector<int>{100}));
}

// ---- interop with QEMU's tools ----

bool have_tool(const char* name) {
  std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

struct CommandResult {
  int exit_code;
  std::string output;
};

CommandResult run_command(const std::string& cmd) {
  CommandResult out{-1, {}};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out.output += buf;
  int status = pclose(p);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// A tool running in the background (qemu-io holding an image), stopped on destruction.
class Background {
 public:
  explicit Background(std::vector<std::string> argv) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Background() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

// Waits (at most two seconds) until someone holds lock byte `byte` of `path`.
bool wait_for_lock(const std::string& path, int byte) {
  for (int i = 0; i < 200; ++i) {
    auto held = bytes_held(path);
    if (std::find(held.begin(), held.end(), byte) != held.end()) return true;
    usleep(10000);
  }
  return false;
}

class FilePermQemuTest : public FilePermTest {
 protected:
  void SetUp() override {
    FilePermTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(have_tool("qemu-img") && have_tool("qemu-io"))
        << "qemu-img and qemu-io (Debian qemu-utils) are required";
    auto created = run_command("qemu-img create -q -f qcow2 '" + image_ + "' 1M");
    ASSERT_EQ(created.exit_code, 0) << created.output;
  }
  CommandResult qemu_img_info(bool force_share) {
    return run_command(std::string("qemu-img info ") + (force_share ? "-U " : "") + "-f qcow2 '" +
                       image_ + "'");
  }
};

TEST_F(FilePermQemuTest, QemuImgSeesAWritableStrataNode) {
  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  // What a writable qcow2 node on top would ask for.
  auto writer = engine_->attach_backend(*node, "", kFormatWriter, kFormatShares);
  ASSERT_TRUE(writer) << writer.error().message();

  auto info = qemu_img_info(false);
  EXPECT_NE(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("Failed to get shared \"write\" lock"), std::string::npos)
      << info.output;
  auto shared = qemu_img_info(true);
  EXPECT_EQ(shared.exit_code, 0) << shared.output;

  writer->reset();
  auto after = qemu_img_info(false);
  EXPECT_EQ(after.exit_code, 0) << after.output;
}

TEST_F(FilePermQemuTest, StrataSeesAWritingQemuIo) {
  Background qemu_io({"qemu-io", "-f", "qcow2", "-c", "sleep 3000", image_});
  ASSERT_TRUE(qemu_io.started());
  ASSERT_TRUE(wait_for_lock(image_, 201)) << "qemu-io did not take its write lock";

  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  auto writer = engine_->attach_backend(*node, "", kFormatWriter, kFormatShares);
  ASSERT_FALSE(writer);
  EXPECT_EQ(writer.error().message(), "Failed to get \"write\" lock");
  EXPECT_EQ(writer.error().hint(), "Is another process using the image [" + image_ + "]?");
  EXPECT_FALSE(only_descriptor(image_).read_write())
      << "the failed attach closed its read-write descriptor";
  EXPECT_TRUE(node->parents().empty());
}

TEST_F(FilePermQemuTest, ReadersThatShareCoexist) {
  // A read-only qcow2 in qemu-io uses consistent read and does not share write or resize.
  Background qemu_io({"qemu-io", "-r", "-f", "qcow2", "-c", "sleep 3000", image_});
  ASSERT_TRUE(qemu_io.started());
  ASSERT_TRUE(wait_for_lock(image_, 100)) << "qemu-io did not take its read lock";

  Node* node = open_auto();
  ASSERT_NE(node, nullptr);
  auto reader = engine_->attach_backend(*node, "", kRead, kFormatShares);
  ASSERT_TRUE(reader) << reader.error().message();
  auto info = qemu_img_info(false);
  EXPECT_EQ(info.exit_code, 0) << info.output;
  // But Strata may not write while qemu-io refuses to share it.
  reader->reset();
  auto writer = engine_->attach_backend(*node, "", kFormatWriter, kFormatShares);
  ASSERT_FALSE(writer);
  EXPECT_EQ(writer.error().message(), "Failed to get \"write\" lock");
  EXPECT_FALSE(node->driver().storage_read_write());
}

}  // namespace
}  // namespace strata
