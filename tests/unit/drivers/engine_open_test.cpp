// null-co and memory opened the way users open them: through an Engine, from JSON or keyval.
// The other tests in this directory use a stand-in for the core; these check that the drivers
// and the real core agree on the contract (options left to the driver, the node as `file`).
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr Perm kReadWrite = Perm::kConsistentRead | Perm::kWrite;

TEST(DriversThroughEngine, MemoryFromKeyval) {
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  auto opts = parse_keyval("memory,node-name=m0,size=1M", "driver");
  ASSERT_TRUE(opts) << opts.error().message();
  auto node = run_sync(loop, engine.add_node(*opts, OptionSyntax::kKeyval));
  ASSERT_TRUE(node) << node.error().message();
  EXPECT_EQ((*node)->name(), "m0");
  EXPECT_EQ((*node)->size(), uint64_t{1} << 20);

  auto blk = engine.attach_backend(**node, "", kReadWrite, Perm::kAll);
  ASSERT_TRUE(blk) << blk.error().message();
  std::vector<uint8_t> data(4096, 0x3c);
  ASSERT_TRUE(run_sync(loop, (*blk)->write(65536, data.size(), IoVec(data.data(), data.size()))));
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE(run_sync(loop, (*blk)->read(65536, back.size(), IoVec(back.data(), back.size()))));
  EXPECT_EQ(back, data);

  auto hole = run_sync(loop, (*blk)->block_status(0, uint64_t{1} << 20));
  ASSERT_TRUE(hole) << hole.error().message();
  EXPECT_EQ(hole->bytes, 65536u);
  EXPECT_TRUE(has_flag(hole->flags, BlockStatusFlags::kZero));
  EXPECT_FALSE(has_flag(hole->flags, BlockStatusFlags::kData));
  auto written = run_sync(loop, (*blk)->block_status(65536, 65536));
  ASSERT_TRUE(written) << written.error().message();
  EXPECT_TRUE(has_flag(written->flags, BlockStatusFlags::kData));
  EXPECT_EQ(written->file, *node);
}

TEST(DriversThroughEngine, NullCoFromJson) {
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  json opts = {{"driver", "null-co"}, {"node-name", "n0"}, {"read-zeroes", true}};
  auto node = run_sync(loop, engine.add_node(opts));
  ASSERT_TRUE(node) << node.error().message();
  EXPECT_EQ((*node)->size(), uint64_t{1} << 30);

  auto blk = engine.attach_backend(**node, "", Perm::kConsistentRead, Perm::kAll);
  ASSERT_TRUE(blk) << blk.error().message();
  std::vector<uint8_t> buf(512, 0xff);
  ASSERT_TRUE(run_sync(loop, (*blk)->read(0, buf.size(), IoVec(buf.data(), buf.size()))));
  EXPECT_EQ(buf, std::vector<uint8_t>(512, 0));
}

TEST(DriversThroughEngine, OptionErrorsReachTheUser) {
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  auto missing = run_sync(loop, engine.add_node({{"driver", "memory"}}));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "Parameter 'size' is missing");

  auto opts = parse_keyval("null-co,read-zeroes=maybe", "driver");
  ASSERT_TRUE(opts);
  auto bad_bool = run_sync(loop, engine.add_node(*opts, OptionSyntax::kKeyval));
  ASSERT_FALSE(bad_bool);
  EXPECT_EQ(bad_bool.error().message(), "Parameter 'read-zeroes' expects 'on' or 'off'");
  EXPECT_TRUE(engine.nodes().empty());
}

}  // namespace
}  // namespace strata
