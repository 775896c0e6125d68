// The fault-inject filter through the core's request path: a user's requests to a fault-inject
// node over a memory node, failing exactly the requests the options arm.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
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

constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kBlock = 4096;
constexpr Perm kReadWrite = Perm::kConsistentRead | Perm::kWrite;

// One request kind as a user issues it; returns the request's errno (0 = success).
enum class Op { kRead, kWrite, kFlush, kZeroes, kDiscard };

class FaultInjectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mem = run_sync(
        loop_, engine_->add_node({{"driver", "memory"}, {"node-name", "m0"}, {"size", kSize}}));
    ASSERT_TRUE(mem) << mem.error().message();
  }
  void TearDown() override {
    blk_.reset();
    engine_.reset();
  }

  // A fault-inject node "f0" over m0 with `extra` options. Discard is passed down (the core
  // drops discards on nodes with discard=ignore before they reach the driver).
  static json fault_opts(json extra = json::object()) {
    json opts = {
        {"driver", "fault-inject"}, {"node-name", "f0"}, {"file", "m0"}, {"discard", "unmap"}};
    for (auto it = extra.begin(); it != extra.end(); ++it) opts[it.key()] = *it;
    return opts;
  }
  void open(json extra) {
    auto node = run_sync(loop_, engine_->add_node(fault_opts(std::move(extra))));
    ASSERT_TRUE(node) << node.error().message();
    auto blk = engine_->attach_backend(**node, "disk", kReadWrite, Perm::kAll);
    ASSERT_TRUE(blk) << blk.error().message();
    blk_ = std::move(*blk);
  }
  Result<Node*> try_open(json options, OptionSyntax syntax = OptionSyntax::kJson) {
    return run_sync(loop_, engine_->add_node(std::move(options), syntax));
  }

  int issue(Op op) {
    std::vector<uint8_t> buf(kBlock, 0x5a);
    Result<void> r;
    switch (op) {
      case Op::kRead:
        r = run_sync(loop_, blk_->read(0, kBlock, IoVec(buf.data(), buf.size())));
        break;
      case Op::kWrite:
        r = run_sync(loop_, blk_->write(0, kBlock, IoVec(buf.data(), buf.size())));
        break;
      case Op::kFlush:
        r = run_sync(loop_, blk_->flush());
        break;
      case Op::kZeroes:
        r = run_sync(loop_, blk_->pwrite_zeroes(kBlock, kBlock));
        break;
      case Op::kDiscard:
        r = run_sync(loop_, blk_->discard(2 * kBlock, kBlock));
        break;
    }
    return r ? 0 : r.error().err();
  }

  EventLoop loop_;
  std::unique_ptr<Engine> engine_ = std::make_unique<Engine>(loop_, builtin_drivers());
  std::unique_ptr<BlockBackend> blk_;
};

TEST_F(FaultInjectTest, FailsExactlyTheNthReadWithTheErrno) {
  open({{"kind", "read"}, {"nth", 3}, {"errno", "ENOSPC"}});
  EXPECT_EQ(issue(Op::kRead), 0);
  EXPECT_EQ(issue(Op::kWrite), 0);  // not a read: not counted
  EXPECT_EQ(issue(Op::kRead), 0);
  std::vector<uint8_t> buf(kBlock);
  auto third = run_sync(loop_, blk_->read(0, kBlock, IoVec(buf.data(), buf.size())));
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().err(), ENOSPC);
  EXPECT_EQ(third.error().message(), "No space left on device");
  EXPECT_EQ(issue(Op::kRead), 0);  // count=1: only the third
  EXPECT_EQ(issue(Op::kRead), 0);
}

TEST_F(FaultInjectTest, OtherKindsPassThroughUnaffected) {
  open({{"kind", "write"}});
  EXPECT_EQ(issue(Op::kRead), 0);
  EXPECT_EQ(issue(Op::kFlush), 0);
  EXPECT_EQ(issue(Op::kZeroes), 0);
  EXPECT_EQ(issue(Op::kDiscard), 0);
  EXPECT_EQ(issue(Op::kWrite), EIO);  // the default errno
  EXPECT_EQ(issue(Op::kWrite), 0);
  // A failed write does not reach the child; the next one did.
  std::vector<uint8_t> buf(kBlock);
  ASSERT_TRUE(run_sync(loop_, blk_->read(0, kBlock, IoVec(buf.data(), buf.size()))));
  EXPECT_EQ(buf, std::vector<uint8_t>(kBlock, 0x5a));
}

TEST_F(FaultInjectTest, EachKindCanBeTheOneThatFails) {
  struct Case {
    const char* kind;
    Op op;
  };
  const Case cases[] = {{"read", Op::kRead},
                        {"write", Op::kWrite},
                        {"flush", Op::kFlush},
                        {"write-zeroes", Op::kZeroes},
                        {"discard", Op::kDiscard}};
  const Op all[] = {Op::kRead, Op::kWrite, Op::kFlush, Op::kZeroes, Op::kDiscard};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.kind);
    open({{"kind", c.kind}, {"errno", "EPERM"}});
    for (Op other : all) {
      if (other != c.op) {
        EXPECT_EQ(issue(other), 0);
      }
    }
    EXPECT_EQ(issue(c.op), EPERM);
    EXPECT_EQ(issue(c.op), 0);
    blk_.reset();
    ASSERT_TRUE(run_sync(loop_, engine_->delete_node("f0")));
  }
}

TEST_F(FaultInjectTest, AnyCountsEveryKind) {
  open({{"nth", 4}, {"errno", 13}});
  EXPECT_EQ(issue(Op::kRead), 0);
  EXPECT_EQ(issue(Op::kZeroes), 0);
  EXPECT_EQ(issue(Op::kWrite), 0);
  EXPECT_EQ(issue(Op::kFlush), EACCES);
  EXPECT_EQ(issue(Op::kDiscard), 0);
}

TEST_F(FaultInjectTest, CountSaysHowManyFailFromTheNth) {
  struct Case {
    uint64_t nth;
    uint64_t count;
    std::vector<int> outcomes;  // errno of reads 1..8
  };
  const Case cases[] = {
      {2, 1, {0, EIO, 0, 0, 0, 0, 0, 0}},
      {2, 3, {0, EIO, EIO, EIO, 0, 0, 0, 0}},
      {3, 0, {0, 0, EIO, EIO, EIO, EIO, EIO, EIO}},
      {1, 2, {EIO, EIO, 0, 0, 0, 0, 0, 0}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "nth=" << c.nth << " count=" << c.count);
    open({{"kind", "read"}, {"nth", c.nth}, {"count", c.count}});
    std::vector<int> got;
    for (size_t i = 0; i < c.outcomes.size(); ++i) got.push_back(issue(Op::kRead));
    EXPECT_EQ(got, c.outcomes);
    blk_.reset();
    ASSERT_TRUE(run_sync(loop_, engine_->delete_node("f0")));
  }
}

TEST_F(FaultInjectTest, KeyvalOptions) {
  auto opts =
      parse_keyval("fault-inject,node-name=f0,file=m0,kind=read,nth=2,errno=28,count=2", "driver");
  ASSERT_TRUE(opts) << opts.error().message();
  auto node = try_open(*opts, OptionSyntax::kKeyval);
  ASSERT_TRUE(node) << node.error().message();
  auto blk = engine_->attach_backend(**node, "disk", kReadWrite, Perm::kAll);
  ASSERT_TRUE(blk) << blk.error().message();
  blk_ = std::move(*blk);
  EXPECT_EQ(issue(Op::kRead), 0);
  EXPECT_EQ(issue(Op::kRead), ENOSPC);
  EXPECT_EQ(issue(Op::kRead), ENOSPC);
  EXPECT_EQ(issue(Op::kRead), 0);
}

TEST_F(FaultInjectTest, BadOptionsAreRefusedBeforeTheChildIsOpened) {
  const std::string errno_text =
      "expected EIO, ENOSPC, EPERM, EROFS, EACCES, ENOMEM, EINVAL or a number from 1 to 4095";
  struct Case {
    json extra;
    std::string message;
  };
  const Case cases[] = {
      {{{"kind", "reads"}}, "Parameter 'kind' does not accept value 'reads'"},
      {{{"nth", 0}}, "Invalid parameter 'nth': requests are counted from 1"},
      {{{"nth", -1}}, "Parameter 'nth' expects uint64"},
      {{{"errno", "EFOO"}}, "Invalid parameter 'errno': " + errno_text},
      {{{"errno", 0}}, "Invalid parameter 'errno': " + errno_text},
      {{{"errno", 4096}}, "Invalid parameter 'errno': " + errno_text},
      {{{"errno", "12a"}}, "Invalid parameter 'errno': " + errno_text},
      {{{"errno", true}}, "Invalid parameter 'errno': " + errno_text},
      {{{"count", "x"}}, "Parameter 'count' expects uint64"},
      {{{"probability", 1}}, "Parameter 'probability' is unexpected"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.extra.dump());
    // The child cannot be opened: had the filter tried before checking its options, the error
    // would be the file's.
    json opts = {
        {"driver", "fault-inject"},
        {"node-name", "f1"},
        {"file", {{"driver", "file"}, {"node-name", "c1"}, {"filename", "/nonexistent/x"}}}};
    for (auto it = c.extra.begin(); it != c.extra.end(); ++it) opts[it.key()] = *it;
    auto node = try_open(opts);
    ASSERT_FALSE(node);
    EXPECT_EQ(node.error().message(), c.message);
    EXPECT_EQ(node.error().err(), EINVAL);
    EXPECT_EQ(engine_->find_node("c1"), nullptr);
    EXPECT_EQ(engine_->find_node("f1"), nullptr);
  }
  auto missing = try_open({{"driver", "fault-inject"}, {"node-name", "f1"}});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "Parameter 'file' is missing");
}

TEST_F(FaultInjectTest, PassesDataAndSizeThrough) {
  open({{"kind", "discard"}});
  EXPECT_EQ(blk_->size(), kSize);
  std::vector<uint8_t> data(kBlock, 0xc3);
  ASSERT_TRUE(run_sync(loop_, blk_->write(8 * kBlock, kBlock, IoVec(data.data(), data.size()))));
  auto st = run_sync(loop_, blk_->block_status(8 * kBlock, kBlock));
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(has_flag(st->flags, BlockStatusFlags::kData));
  EXPECT_EQ(st->file, engine_->find_node("m0"));
}

TEST_F(FaultInjectTest, ReopenChangesTheOptionsAndRearms) {
  open({{"kind", "read"}});
  EXPECT_EQ(issue(Op::kRead), EIO);
  EXPECT_EQ(issue(Op::kRead), 0);
  ASSERT_TRUE(run_sync(loop_, engine_->reopen({fault_opts({{"kind", "write"}, {"nth", 2}})})));
  EXPECT_EQ(issue(Op::kRead), 0);
  EXPECT_EQ(issue(Op::kWrite), 0);
  EXPECT_EQ(issue(Op::kWrite), EIO);
  // Left out: back to the defaults (any, nth=1), counting again from zero.
  ASSERT_TRUE(run_sync(loop_, engine_->reopen({fault_opts()})));
  EXPECT_EQ(issue(Op::kFlush), EIO);
  EXPECT_EQ(issue(Op::kRead), 0);
  // A bad value fails the reopen and leaves the node as it was (disarmed now).
  auto bad = run_sync(loop_, engine_->reopen({fault_opts({{"errno", "EBOGUS"}})}));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("Invalid parameter 'errno'"), std::string::npos);
  EXPECT_EQ(issue(Op::kRead), 0);
}

}  // namespace
}  // namespace strata
