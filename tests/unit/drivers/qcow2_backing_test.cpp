// qcow2's change_backing_file: the new name and format reach the header, which still decodes,
// and a name that cannot fit leaves the image as it was.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "strata/builtin_drivers.h"
#include "strata/driver.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata {
namespace {

using nlohmann::json;

class Qcow2BackingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path("/dev/shm") / ("strata-backing-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "top.qcow2").string();
    const ImageCreator* qcow2 = find_image_creator("qcow2");
    ASSERT_NE(qcow2, nullptr);
    CreateOptionValues values{{"size", "1048576"}, {"cluster_size", "4096"}};
    ASSERT_TRUE(qcow2->create(path_, values).has_value());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The image's recorded backing file, read by a fresh open (without opening the backing file,
  // which does not exist).
  ImageFacts facts() {
    EventLoop loop;
    Engine engine(loop, builtin_drivers());
    auto node =
        run_sync(loop, engine.add_node(json{{"driver", "qcow2"},
                                            {"read-only", true},
                                            {"backing", nullptr},
                                            {"file", {{"driver", "file"}, {"filename", path_}}}}));
    EXPECT_TRUE(node.has_value());
    return node ? (*node)->driver().image_facts() : ImageFacts{};
  }

  Result<void> change(const std::string& name, const std::string& format) {
    EventLoop loop;
    Engine engine(loop, builtin_drivers());
    auto node =
        run_sync(loop, engine.add_node(json{{"driver", "qcow2"},
                                            {"backing", nullptr},
                                            {"file", {{"driver", "file"}, {"filename", path_}}}}));
    EXPECT_TRUE(node.has_value());
    if (!node) return node.error();
    return run_sync(loop, (*node)->driver().change_backing_file(name, format));
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(Qcow2BackingTest, NameAndFormatReachTheHeader) {
  ASSERT_TRUE(change("base.qcow2", "qcow2").has_value());
  ImageFacts f = facts();
  EXPECT_EQ(f.backing_file, "base.qcow2");
  EXPECT_EQ(f.backing_format, "qcow2");
  ASSERT_TRUE(change("/elsewhere/other.raw", "").has_value());
  f = facts();
  EXPECT_EQ(f.backing_file, "/elsewhere/other.raw");
  EXPECT_EQ(f.backing_format, "");
  ASSERT_TRUE(change("", "").has_value());
  EXPECT_EQ(facts().backing_file, "");
}

TEST_F(Qcow2BackingTest, ANameThatCannotFitChangesNothing) {
  ASSERT_TRUE(change("base.qcow2", "qcow2").has_value());
  auto r = change(std::string(2000, 'x'), "qcow2");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("Backing file name too long"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(facts().backing_file, "base.qcow2");
}

}  // namespace
}  // namespace strata
