// QEMU iotest 232 for Strata: read-only x auto-read-only (each on, off or left out) for a `file`
// node added on its own (-blockdev semantics), on storage that can be written and on storage
// that refuses writes (a read-only bind mount: EROFS; 232 itself uses chmod a-w, which root
// ignores, and so skips as root).
//
// For each combination the test prints one line, in place of QEMU's `info block`: what the node
// is ("(file)" or "(file, read-only)", or the error that kept it from opening), whether its
// storage is open read-write now, and whether a writer can attach (and the storage then). The
// lines are compared with a golden table: 232.out adapted to -blockdev, plus the dynamic
// auto-read-only facts 232 cannot show (storage read-only until a writer comes).
//
// The mount needs CAP_SYS_ADMIN; without it the test is skipped.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata {
namespace {

using nlohmann::json;

// On/off/left out, as 232 loops over them.
constexpr std::optional<bool> kSettings[] = {true, false, std::nullopt};

std::string setting_name(std::optional<bool> v) { return !v ? "unset" : *v ? "on" : "off"; }

constexpr const char* kExpected =
    "writable read-only=on auto-read-only=on: (file, read-only); storage ro; "
    "writer: Block node is read-only\n"
    "writable read-only=on auto-read-only=off: (file, read-only); storage ro; "
    "writer: Block node is read-only\n"
    "writable read-only=on auto-read-only=unset: (file, read-only); storage ro; "
    "writer: Block node is read-only\n"
    "writable read-only=off auto-read-only=on: (file); storage ro; writer: ok, storage rw\n"
    "writable read-only=off auto-read-only=off: (file); storage rw; writer: ok, storage rw\n"
    "writable read-only=off auto-read-only=unset: (file); storage rw; writer: ok, storage rw\n"
    "writable read-only=unset auto-read-only=on: (file); storage ro; writer: ok, storage rw\n"
    "writable read-only=unset auto-read-only=off: (file); storage rw; writer: ok, storage rw\n"
    "writable read-only=unset auto-read-only=unset: (file); storage rw; writer: ok, storage rw\n"
    "unwritable read-only=on auto-read-only=on: (file, read-only); storage ro; "
    "writer: Block node is read-only\n"
    "unwritable read-only=on auto-read-only=off: (file, read-only); storage ro; "
    "writer: Block node is read-only\n"
    "unwritable read-only=on auto-read-only=unset: (file, read-only); storage ro; "
    "writer: Block node is read-only\n"
    "unwritable read-only=off auto-read-only=on: (file); storage ro; writer: Block node 'n' is "
    "read-only because of auto-read-only=on and its storage refuses write access: Could not "
    "open 'RO/t.raw' read-write: Read-only file system\n"
    "unwritable read-only=off auto-read-only=off: Could not open 'RO/t.raw': Read-only file "
    "system\n"
    "unwritable read-only=off auto-read-only=unset: Could not open 'RO/t.raw': Read-only file "
    "system\n"
    "unwritable read-only=unset auto-read-only=on: (file); storage ro; writer: Block node 'n' "
    "is read-only because of auto-read-only=on and its storage refuses write access: Could not "
    "open 'RO/t.raw' read-write: Read-only file system\n"
    "unwritable read-only=unset auto-read-only=off: Could not open 'RO/t.raw': Read-only file "
    "system\n"
    "unwritable read-only=unset auto-read-only=unset: Could not open 'RO/t.raw': Read-only file "
    "system\n";

class AccessMatrix : public ::testing::Test {
 protected:
  void SetUp() override {
    char base[] = "/tmp/strata-access-XXXXXX";
    ASSERT_NE(mkdtemp(base), nullptr) << std::strerror(errno);
    base_ = base;
    rw_dir_ = base_ + "/rw";
    ro_dir_ = base_ + "/ro";
    ASSERT_EQ(mkdir(rw_dir_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(ro_dir_.c_str(), 0755), 0);
    std::ofstream(rw_dir_ + "/t.raw").close();
    ASSERT_EQ(truncate((rw_dir_ + "/t.raw").c_str(), 1 << 20), 0);
    // A read-only view of the same directory: opening for writing there fails with EROFS.
    if (mount(rw_dir_.c_str(), ro_dir_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      GTEST_SKIP() << "cannot bind-mount: " << std::strerror(errno);
    }
    mounted_ = true;
    if (mount(nullptr, ro_dir_.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      GTEST_SKIP() << "cannot remount read-only: " << std::strerror(errno);
    }
  }

  void TearDown() override {
    if (mounted_) umount2(ro_dir_.c_str(), MNT_DETACH);
    if (base_.empty()) return;
    std::remove((rw_dir_ + "/t.raw").c_str());
    rmdir(ro_dir_.c_str());
    rmdir(rw_dir_.c_str());
    rmdir(base_.c_str());
  }

  // One line of the table for `path` with the given settings.
  std::string row(const std::string& path, std::optional<bool> read_only,
                  std::optional<bool> auto_read_only) {
    EventLoop loop;
    Engine engine(loop, builtin_drivers());
    json opts = {{"driver", "file"}, {"node-name", "n"}, {"filename", path}};
    if (read_only) opts["read-only"] = *read_only;
    if (auto_read_only) opts["auto-read-only"] = *auto_read_only;
    auto node = run_sync(loop, engine.add_node(opts));
    if (!node) return node.error().message();
    std::string line = (*node)->is_read_only() ? "(file, read-only)" : "(file)";
    auto rw = [&] { return (*node)->access().storage_read_write ? "rw" : "ro"; };
    line += fmt::format("; storage {}; writer: ", rw());
    auto writer =
        engine.attach_backend(**node, "", Perm::kConsistentRead | Perm::kWrite, Perm::kAll);
    if (!writer) return line + writer.error().message();
    return line + fmt::format("ok, storage {}", rw());
  }

  std::string base_, rw_dir_, ro_dir_;
  bool mounted_ = false;
};

TEST_F(AccessMatrix, ReadOnlyTimesAutoReadOnlyOnBothStorages) {
  std::string table;
  for (const auto& [label, dir] :
       {std::pair{"writable", rw_dir_}, std::pair{"unwritable", ro_dir_}}) {
    for (auto read_only : kSettings) {
      for (auto auto_read_only : kSettings) {
        std::string line = row(dir + "/t.raw", read_only, auto_read_only);
        for (size_t at = line.find(ro_dir_); at != std::string::npos; at = line.find(ro_dir_)) {
          line.replace(at, ro_dir_.size(), "RO");
        }
        table += fmt::format("{} read-only={} auto-read-only={}: {}\n", label,
                             setting_name(read_only), setting_name(auto_read_only), line);
      }
    }
  }
  EXPECT_EQ(table, kExpected);
}

}  // namespace
}  // namespace strata
