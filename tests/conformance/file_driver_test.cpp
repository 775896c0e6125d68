// The file driver's own behaviour, beyond what the conformance suite checks on every stack:
// options, open errors and flags (with auto-read-only's switch; its permission transactions and
// locks are tested in tests/unit/drivers/file_perm_test.cpp), O_DIRECT alignment, growth, short
// files, preallocation, block status at file-system extents, and block devices (through a loop
// device).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "harness.h"
#include "protocol/file_sys.h"
#include "strata/align.h"

namespace strata::testing {
namespace {

using nlohmann::json;

json file_options(const std::string& path) {
  return json{{"driver", "file"}, {"node-name", "f"}, {"filename", path}};
}

std::string open_error(Harness& h, json options) {
  auto node = h.add(std::move(options));
  if (node) return "(opened)";
  return node.error().message();
}

// The open(2) flags of this process's descriptor for `path`, from /proc; nullopt if none.
std::optional<int> open_flags_of(const std::string& path) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code link_ec;
    auto target = std::filesystem::read_symlink(entry.path(), link_ec);
    if (link_ec || target != path) continue;
    std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
    std::string key;
    while (info >> key) {
      if (key == "flags:") {
        std::string octal;
        info >> octal;
        return std::stoi(octal, nullptr, 8);
      }
    }
  }
  return std::nullopt;
}

TEST(FileDriverOptions, MissingFilenameIsRefused) {
  Harness h;
  EXPECT_EQ(open_error(h, json{{"driver", "file"}, {"node-name", "f"}}),
            "Parameter 'filename' is missing");
}

TEST(FileDriverOptions, MissingFileIsRefusedWithQemuTextAndErrno) {
  Harness h;
  auto node = h.add(file_options("/tmp/strata-no-such-file"));
  ASSERT_FALSE(node);
  EXPECT_EQ(node.error().message(),
            "Could not open '/tmp/strata-no-such-file': No such file or directory");
  EXPECT_EQ(node.error().err(), ENOENT);
}

TEST(FileDriverOptions, DirectoryIsNotAnImage) {
  Harness h;
  json o = file_options("/tmp");
  o["read-only"] = true;
  EXPECT_EQ(open_error(h, o), "'file' driver requires '/tmp' to be a regular file");
}

TEST(FileDriverOptions, AioModesAreThreadsIoUringAndNative) {
  TempFile image("/tmp", 65536);
  for (const char* mode : {"threads", "io_uring", "native"}) {
    Harness h;
    json o = file_options(image.path());
    o["aio"] = mode;
    auto node = h.add(o);
    if (!node && std::string(mode) != "threads" && !h.loop().file_io(AioMode::kIoUring)) {
      continue;  // io_uring cannot start here; the conformance suite says so loudly
    }
    EXPECT_TRUE(node) << mode << ": " << node.error().message();
  }
  Harness h;
  json o = file_options(image.path());
  o["aio"] = "posix";
  EXPECT_EQ(open_error(h, o), "Parameter 'aio' does not accept value 'posix'");
}

TEST(FileDriverOptions, LockingIsAutoOnOrOff) {
  TempFile image("/tmp", 65536);
  for (const char* mode : {"auto", "on", "off"}) {
    Harness h;
    json o = file_options(image.path());
    o["locking"] = mode;
    auto node = h.add(o);
    EXPECT_TRUE(node) << mode << ": " << node.error().message();
  }
  Harness h;
  json o = file_options(image.path());
  o["locking"] = "maybe";
  EXPECT_EQ(open_error(h, o), "Parameter 'locking' does not accept value 'maybe'");
}

TEST(FileDriver, OpenFlagsFollowReadOnlyAndCacheDirect) {
  TempFile image("/var/tmp", 65536);
  struct Case {
    bool read_only;
    bool auto_read_only;
    bool direct;
    int access;  // at open: auto-read-only starts read-only, whatever read-only says
  };
  const Case cases[] = {
      {false, false, false, O_RDWR}, {true, false, false, O_RDONLY}, {false, false, true, O_RDWR},
      {true, false, true, O_RDONLY}, {false, true, false, O_RDONLY}, {false, true, true, O_RDONLY},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "read-only=" << c.read_only << " auto-read-only="
                                      << c.auto_read_only << " direct=" << c.direct);
    Harness h;
    json o = file_options(image.path());
    o["read-only"] = c.read_only;
    o["auto-read-only"] = c.auto_read_only;
    o["cache"] = {{"direct", c.direct}};
    auto node = h.add(o);
    if (!node && c.direct && node.error().err() == EINVAL) {
      GTEST_SKIP() << "O_DIRECT refused under /var/tmp: " << node.error().message();
    }
    ASSERT_TRUE(node) << node.error().message();
    auto flags = open_flags_of(image.path());
    ASSERT_TRUE(flags) << "no descriptor open on " << image.path();
    EXPECT_EQ(*flags & O_ACCMODE, c.access);
    EXPECT_EQ((*flags & O_DIRECT) != 0, c.direct);
    EXPECT_EQ((*node)->driver().storage_read_write(), c.access == O_RDWR);
  }
}

// The descriptor an auto-read-only node switches to keeps the node's other open flags and
// serves I/O on both file backends.
TEST(FileDriver, AutoReadOnlyNodeWritesThroughItsSwitchedDescriptor) {
  TempFile image("/var/tmp", 1 << 20);
  for (const char* aio : {"threads", "io_uring"}) {
    for (bool direct : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "aio=" << aio << " direct=" << direct);
      Harness h;
      if (std::string(aio) == "io_uring" && !h.loop().file_io(AioMode::kIoUring)) continue;
      json o = file_options(image.path());
      o["auto-read-only"] = true;
      o["aio"] = aio;
      o["cache"] = {{"direct", direct}};
      auto node = h.add(o);
      if (!node && direct && node.error().err() == EINVAL) continue;  // no O_DIRECT here
      ASSERT_TRUE(node) << node.error().message();
      ASSERT_TRUE(h.attach(**node, Perm::kConsistentRead | Perm::kWrite));
      auto flags = open_flags_of(image.path());
      ASSERT_TRUE(flags);
      EXPECT_EQ(*flags & O_ACCMODE, O_RDWR);
      EXPECT_EQ((*flags & O_DIRECT) != 0, direct);
      EXPECT_NE(*flags & O_CLOEXEC, 0);

      std::vector<uint8_t> data = pattern(direct ? 7 : 8, 4096, 8192);
      ASSERT_TRUE(h.write(4096, data));
      ASSERT_TRUE(h.flush());
      EXPECT_EQ(image.contents(4096, 8192), data);
      h.detach();
      flags = open_flags_of(image.path());
      ASSERT_TRUE(flags);
      EXPECT_EQ(*flags & O_ACCMODE, O_RDONLY);
      EXPECT_EQ((*flags & O_DIRECT) != 0, direct);
    }
  }
}

TEST(FileDriver, DirectIoAlignmentIsFoundAtOpen) {
  TempFile image("/var/tmp", 65536);
  Harness h;
  json o = file_options(image.path());
  o["cache"] = {{"direct", true}};
  auto node = h.add(o);
  if (!node && node.error().err() == EINVAL) GTEST_SKIP() << node.error().message();
  ASSERT_TRUE(node) << node.error().message();
  NodeLimits limits = (*node)->driver().limits();
  EXPECT_TRUE(is_power_of_2(limits.request_alignment));
  EXPECT_GE(limits.request_alignment, 512u);
  EXPECT_TRUE(is_power_of_2(limits.memory_alignment));
#ifdef STATX_DIOALIGN
  struct statx stx = {};
  ASSERT_EQ(::statx(AT_FDCWD, image.path().c_str(), 0, STATX_DIOALIGN, &stx), 0);
  if ((stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align != 0) {
    EXPECT_EQ(limits.request_alignment, stx.stx_dio_offset_align);
    EXPECT_EQ(limits.memory_alignment, stx.stx_dio_mem_align);
  }
#endif
  // Buffered I/O has no alignment.
  Harness buffered;
  auto plain = buffered.add(file_options(image.path()));
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_EQ((*plain)->driver().limits().request_alignment, 1u);
  EXPECT_EQ((*plain)->driver().limits().memory_alignment, 1u);
}

// probe_direct_alignment against simulated devices: which reads the "kernel" accepts.
TEST(FileDriver, ProbingFindsTheSmallestAlignmentTheDeviceAccepts) {
  struct Device {
    const char* name;
    uint32_t min_len;       // reads must be a multiple of this
    uint32_t min_mem;       // buffers must be aligned to this
    bool accepts_anything;  // e.g. an empty file: every read returns 0
    drivers::DirectAlignment expected;
  };
  const Device devices[] = {
      {"512-byte sectors", 512, 512, false, {512, 512}},
      {"4k sectors", 4096, 512, false, {4096, 512}},
      {"4k sectors, 4k buffers", 4096, 4096, false, {4096, 4096}},
      {"512-byte sectors, 4k buffers", 512, 4096, false, {512, 4096}},
      {"says yes to everything", 1, 1, true, {4096, 4096}},
      {"says no to everything", 1 << 20, 1 << 20, false, {4096, 4096}},
  };
  alignas(4096) static char buf[8192];
  for (const Device& d : devices) {
    auto read_ok = [&d](char* p, size_t len) {
      if (d.accepts_anything) return true;
      return len % d.min_len == 0 && reinterpret_cast<uintptr_t>(p) % d.min_mem == 0;
    };
    drivers::DirectAlignment got = drivers::probe_direct_alignment(read_ok, buf);
    EXPECT_EQ(got.request, d.expected.request) << d.name;
    EXPECT_EQ(got.memory, d.expected.memory) << d.name;
  }
}

TEST(FileDriver, ReadsPastTheEndOfAShrunkenFileReturnZeroes) {
  TempFile image("/tmp", 65536);
  image.write_directly(0, pattern(1, 0, 65536));
  Harness h;
  auto node = h.add(file_options(image.path()));
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));
  image.truncate_directly(10000);  // behind Strata's back
  auto data = h.read(8192, 8192);
  ASSERT_TRUE(data) << data.error().message();
  std::vector<uint8_t> expected = pattern(1, 8192, 10000 - 8192);
  expected.resize(8192, 0);
  EXPECT_EQ(*data, expected);
}

TEST(FileDriver, WritesPastTheEndGrowTheFile) {
  TempFile image("/tmp", 65536);
  Harness h;
  auto node = h.add(file_options(image.path()));
  ASSERT_TRUE(node) << node.error().message();
  EXPECT_TRUE((*node)->driver().limits().can_grow);
  ASSERT_TRUE(h.attach(**node));
  // A parent node (qcow2 allocating a cluster) writes past the end of its file child; here the
  // test writes at the node level, as such a parent's edge would.
  std::vector<uint8_t> data = pattern(2, 70000, 5000);
  auto r = run_sync(h.loop(), (*node)->write(70000, data.size(), IoVec(data.data(), data.size())));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*node)->size(), 75000u);
  EXPECT_EQ(image.size_on_disk(), 75000u);
  EXPECT_EQ(image.contents(70000, 5000), data);
  EXPECT_TRUE(all_zero(image.contents(65536, 70000 - 65536)));
}

uint64_t allocated_bytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

TEST(FileDriver, TruncatePreallocationModes) {
  TempFile image("/tmp", 0);
  Harness h;
  auto node = h.add(file_options(image.path()));
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));

  auto off = h.truncate(1 << 20, PreallocMode::kOff);
  ASSERT_TRUE(off) << off.error().message();
  EXPECT_EQ(image.size_on_disk(), 1u << 20);
  EXPECT_LT(allocated_bytes(image.path()), 1u << 20) << "off must stay sparse";

  auto falloc = h.truncate(2 << 20, PreallocMode::kFalloc);
  ASSERT_TRUE(falloc) << falloc.error().message();
  EXPECT_EQ(h.size(), 2u << 20);
  EXPECT_GE(allocated_bytes(image.path()), 1u << 20) << "falloc allocates the new part";

  std::vector<uint8_t> data = pattern(3, (2 << 20) - 100, 100);
  ASSERT_TRUE(h.write((2 << 20) - 100, data));
  auto full = h.truncate(3 << 20, PreallocMode::kFull);
  ASSERT_TRUE(full) << full.error().message();
  EXPECT_EQ(image.size_on_disk(), 3u << 20);
  EXPECT_GE(allocated_bytes(image.path()), 2u << 20) << "full writes the new part";
  EXPECT_EQ(image.contents((2 << 20) - 100, 100), data) << "full keeps the old end";
  EXPECT_TRUE(all_zero(image.contents(2 << 20, 1 << 20)));

  auto metadata = h.truncate(4 << 20, PreallocMode::kMetadata);
  ASSERT_FALSE(metadata);
  EXPECT_EQ(metadata.error().message(), "Unsupported preallocation mode: metadata");
  EXPECT_EQ(metadata.error().err(), ENOTSUP);

  auto shrink = h.truncate(1 << 20, PreallocMode::kFalloc);
  ASSERT_FALSE(shrink);
  EXPECT_EQ(shrink.error().message(), "Cannot use preallocation for shrinking files");
  EXPECT_EQ(h.size(), 3u << 20);
}

TEST(FileDriver, BlockStatusReportsHolesAndDataWhereTheyAre) {
  TempFile image("/tmp", 1 << 20);
  Harness h;
  auto node = h.add(file_options(image.path()));
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));
  ASSERT_TRUE(h.write(65536, pattern(4, 65536, 65536)));
  Driver& driver = (*node)->driver();

  auto hole = run_sync(h.loop(), driver.block_status(0, 1 << 20));
  ASSERT_TRUE(hole) << hole.error().message();
  EXPECT_EQ(hole->flags, BlockStatusFlags::kZero | BlockStatusFlags::kOffsetValid);
  EXPECT_EQ(hole->bytes, 65536u);
  EXPECT_EQ(hole->map, 0u);
  EXPECT_EQ(hole->file, *node);

  auto data = run_sync(h.loop(), driver.block_status(65536, (1 << 20) - 65536));
  ASSERT_TRUE(data) << data.error().message();
  EXPECT_EQ(data->flags, BlockStatusFlags::kData | BlockStatusFlags::kOffsetValid);
  EXPECT_EQ(data->bytes, 65536u);
  EXPECT_EQ(data->map, 65536u);
  EXPECT_EQ(data->file, *node);

  // Zeroing with may-unmap deallocates: the range becomes a hole again.
  ASSERT_TRUE(h.write_zeroes(65536, 65536, ReqFlags::kMayUnmap));
  auto punched = run_sync(h.loop(), driver.block_status(65536, 4096));
  ASSERT_TRUE(punched) << punched.error().message();
  EXPECT_EQ(punched->flags, BlockStatusFlags::kZero | BlockStatusFlags::kOffsetValid);
  EXPECT_EQ(punched->bytes, 4096u) << "an answer never goes past what was asked";
}

// A loop device over a small file, detached when the test ends.
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& backing) {
    UniqueFdHolder control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
    UniqueFdHolder file(::open(backing.c_str(), O_RDWR | O_CLOEXEC));
    if (control.fd < 0 || file.fd < 0) {
      why_not_ = std::string("cannot open /dev/loop-control: ") + std::strerror(errno);
      return;
    }
    // Another process may take the free device first: try a few times.
    for (int attempt = 0; attempt < 5 && fd_ < 0; ++attempt) {
      int n = ::ioctl(control.fd, LOOP_CTL_GET_FREE);
      if (n < 0) break;
      std::string path = "/dev/loop" + std::to_string(n);
      int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) continue;
      loop_config config = {};
      config.fd = static_cast<uint32_t>(file.fd);
      if (::ioctl(fd, LOOP_CONFIGURE, &config) == 0) {
        fd_ = fd;
        path_ = path;
      } else {
        ::close(fd);
      }
    }
    if (fd_ < 0) why_not_ = std::string("cannot set up a loop device: ") + std::strerror(errno);
  }
  ~LoopDevice() {
    if (fd_ < 0) return;
    // The read-only flag outlives the binding: the next user of this device would inherit it.
    set_read_only(false);
    ::ioctl(fd_, LOOP_CLR_FD, 0);
    ::close(fd_);
  }
  const std::string& path() const { return path_; }
  const std::string& why_not() const { return why_not_; }
  // blockdev --setro / --setrw.
  bool set_read_only(bool read_only) {
    int flag = read_only ? 1 : 0;
    return ::ioctl(fd_, BLKROSET, &flag) == 0;
  }

 private:
  struct UniqueFdHolder {
    explicit UniqueFdHolder(int f) : fd(f) {}
    ~UniqueFdHolder() {
      if (fd >= 0) ::close(fd);
    }
    int fd;
  };
  int fd_ = -1;
  std::string path_;
  std::string why_not_;
};

TEST(FileDriverBlockDevice, ReadsWritesZeroesDiscardsAndRefusesResize) {
  TempFile backing("/tmp", 4 << 20);
  std::optional<LoopDevice> loop_dev;
  loop_dev.emplace(backing.path());
  if (loop_dev->path().empty()) GTEST_SKIP() << loop_dev->why_not();

  Harness h;
  auto node = h.add(file_options(loop_dev->path()));
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));
  EXPECT_EQ(h.size(), 4u << 20);
  EXPECT_FALSE((*node)->driver().limits().can_grow);

  std::vector<uint8_t> data = pattern(5, 1000, 100000);
  ASSERT_TRUE(h.write(1000, data));
  auto back = h.read(1000, data.size());
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, data);

  for (ReqFlags flags : {ReqFlags::kNone, ReqFlags::kMayUnmap}) {
    ASSERT_TRUE(h.write(8192, pattern(6, 8192, 16384)));
    auto z = h.write_zeroes(8192, 16384, flags);
    ASSERT_TRUE(z) << z.error().message();
    auto zeroed = h.read(8192, 16384);
    ASSERT_TRUE(zeroed);
    EXPECT_TRUE(all_zero(*zeroed));
  }
  auto d = h.discard(0, 65536);
  EXPECT_TRUE(d) << d.error().message();
  ASSERT_TRUE(h.flush());

  auto grow = h.truncate(8 << 20);
  ASSERT_FALSE(grow);
  EXPECT_EQ(grow.error().message(), "Cannot resize device files");
  auto grow_inexact = h.truncate(8 << 20, PreallocMode::kOff, false);
  ASSERT_FALSE(grow_inexact);
  EXPECT_EQ(grow_inexact.error().message(), "Cannot grow device files");
  EXPECT_TRUE(h.truncate(1 << 20, PreallocMode::kOff, false)) << "a smaller size is fine";
  auto falloc = h.truncate(4 << 20, PreallocMode::kFalloc);
  ASSERT_FALSE(falloc);
  EXPECT_EQ(falloc.error().message(),
            "Preallocation mode 'falloc' unsupported for this non-regular file");
  EXPECT_EQ(h.size(), 4u << 20);

  h.detach();
}

// open(2) may grant O_RDWR on a device set read-only; the driver asks the device (BLKROGET)
// before it lets a writer in.
TEST(FileDriverBlockDevice, AutoReadOnlyRefusesAWriterOnAReadOnlyDevice) {
  TempFile backing("/tmp", 1 << 20);
  std::optional<LoopDevice> loop_dev;
  loop_dev.emplace(backing.path());
  if (loop_dev->path().empty()) GTEST_SKIP() << loop_dev->why_not();
  ASSERT_TRUE(loop_dev->set_read_only(true)) << std::strerror(errno);

  Harness h;
  json o = file_options(loop_dev->path());
  o["auto-read-only"] = true;
  auto node = h.add(o);
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node, Perm::kConsistentRead));
  h.detach();
  auto writer = h.attach(**node, Perm::kConsistentRead | Perm::kWrite);
  ASSERT_FALSE(writer);
  const std::string prefix =
      "Block node 'f' is read-only because of auto-read-only=on and its storage refuses write "
      "access: ";
  // Which of the two refuses depends on the kernel: open(2) itself, or BLKROGET after it.
  EXPECT_TRUE(writer.error().message() ==
                  prefix + "The device is not writable: Permission denied" ||
              writer.error().message() == prefix + "Could not open '" + loop_dev->path() +
                                              "' read-write: Permission denied")
      << writer.error().message();
  EXPECT_EQ(writer.error().err(), EACCES);
  EXPECT_FALSE((*node)->driver().storage_read_write());

  ASSERT_TRUE(loop_dev->set_read_only(false)) << std::strerror(errno);
  EXPECT_TRUE(h.attach(**node, Perm::kConsistentRead | Perm::kWrite));
  EXPECT_TRUE((*node)->driver().storage_read_write());
  h.detach();
}

}  // namespace
}  // namespace strata::testing
