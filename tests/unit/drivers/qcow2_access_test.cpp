// qcow2 over auto-read-only storage: the chain is read-only until someone writes, read-write while
// a writer is attached, and read-only again (metadata written, image clean) once it leaves.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/driver.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata {
namespace {

using nlohmann::json;

// The access mode of every descriptor this process has on `path`.
std::vector<bool> read_write_descriptors(const std::string& path) {
  std::vector<bool> out;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    char target[4096];
    std::string link = std::string("/proc/self/fd/") + entry->d_name;
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n < 0 || std::string(target, n) != path) continue;
    std::ifstream info(std::string("/proc/self/fdinfo/") + entry->d_name);
    std::string key;
    while (info >> key) {
      if (key != "flags:") continue;
      std::string octal;
      info >> octal;
      out.push_back((std::stoi(octal, nullptr, 8) & O_ACCMODE) == O_RDWR);
      break;
    }
  }
  closedir(dir);
  return out;
}

// The qcow2 header's incompatible features (the dirty bit is bit 0).
uint64_t incompatible_features(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(72);
  unsigned char b[8] = {};
  f.read(reinterpret_cast<char*>(b), 8);
  uint64_t v = 0;
  for (unsigned char c : b) v = (v << 8) | c;
  return v;
}

class Qcow2AccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/strata-qcow2-access-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    image_ = dir_ + "/disk.qcow2";
    const ImageCreator* creator = find_image_creator("qcow2");
    ASSERT_NE(creator, nullptr);
    CreateOptionValues values{{"size", "4194304"}, {"lazy_refcounts", "on"}};
    ASSERT_TRUE(creator->create(image_, values));
    engine_ = std::make_unique<Engine>(loop_, builtin_drivers());
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Runs the loop (detached work included) until `done` holds, for at most two seconds.
  template <class Pred>
  void run_until(Pred done) {
    for (int i = 0; i < 400 && !done(); ++i) run_sync(loop_, loop_.sleep_ms(5));
  }

  EventLoop loop_;
  std::unique_ptr<Engine> engine_;
  std::string dir_;
  std::string image_;
};

TEST_F(Qcow2AccessTest, StorageIsReadWriteOnlyWhileAWriterIsAttached) {
  json options = {{"driver", "qcow2"},
                  {"node-name", "q0"},
                  {"auto-read-only", true},
                  {"file", {{"driver", "file"}, {"node-name", "f0"}, {"filename", image_}}}};
  auto node = run_sync(loop_, engine_->add_node(options));
  ASSERT_TRUE(node) << node.error().message();
  Node* file = engine_->find_node("f0");
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(read_write_descriptors(image_), std::vector<bool>{false});
  EXPECT_FALSE(file->access().storage_read_write);

  {
    auto writer =
        engine_->attach_backend(**node, "", Perm::kConsistentRead | Perm::kWrite, Perm::kAll);
    ASSERT_TRUE(writer) << writer.error().message();
    EXPECT_EQ(read_write_descriptors(image_), std::vector<bool>{true});
    std::vector<uint8_t> data(65536, 0x5a);
    auto w = run_sync(loop_, (*writer)->write(0, data.size(), IoVec(data.data(), data.size())));
    ASSERT_TRUE(w) << w.error().message();
    // Lazy refcounts: the dirty bit is on while the writer works.
    EXPECT_EQ(incompatible_features(image_) & 1, 1u);
  }
  // The writer left: metadata goes out, the image is clean and the file read-only again.
  run_until([&] { return !file->access().storage_read_write; });
  EXPECT_EQ(incompatible_features(image_) & 1, 0u);
  EXPECT_FALSE(file->access().storage_read_write);
  EXPECT_EQ(read_write_descriptors(image_), std::vector<bool>{false});

  // The data is there for a reader.
  auto reader = engine_->attach_backend(**node, "", Perm::kConsistentRead, Perm::kAll);
  ASSERT_TRUE(reader);
  std::vector<uint8_t> back(65536);
  ASSERT_TRUE(run_sync(loop_, (*reader)->read(0, back.size(), IoVec(back.data(), back.size()))));
  EXPECT_EQ(back, std::vector<uint8_t>(65536, 0x5a));
  reader->reset();
  std::string check = "qemu-img check -q " + image_ + " >/dev/null 2>&1";
  ASSERT_TRUE(run_sync(loop_, engine_->delete_node("q0")));
  if (std::system("command -v qemu-img >/dev/null 2>&1") == 0) {
    EXPECT_EQ(std::system(check.c_str()), 0);
  }
}

}  // namespace
}  // namespace strata
