// The null-co driver, driven through the Driver interface (QEMU 7.2's block/null.c semantics).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "drivers.h"
#include "fake_open_context.h"
#include "strata/event_loop.h"

namespace strata {
namespace {

using nlohmann::json;
using testing::FakeOpenContext;
using testing::open_driver;

constexpr uint64_t kGiB = uint64_t{1} << 30;

TEST(NullCo, DescribesItself) {
  EXPECT_EQ(drivers::kNullCo.name, "null-co");
  EXPECT_EQ(drivers::kNullCo.kind, DriverKind::kProtocol);
}

TEST(NullCo, DefaultsAreQemu72s) {
  EventLoop loop;
  FakeOpenContext ctx(loop, json::object());
  auto d = open_driver(loop, drivers::kNullCo, ctx);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ((*d)->length(), kGiB);

  NodeLimits l = (*d)->limits();
  EXPECT_EQ(l.request_alignment, 1u);
  EXPECT_TRUE(l.supports_fua);
  EXPECT_FALSE(l.supports_write_zeroes);
  EXPECT_FALSE(l.supports_discard);
  EXPECT_FALSE(l.can_grow);

  // read-zeroes is off in 7.2: the caller's buffer is left as it was.
  std::vector<uint8_t> buf(4096, 0xab);
  ASSERT_TRUE(testing::read(loop, **d, 8192, buf));
  EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0xab));

  auto st = testing::status(loop, **d, 4096, kGiB - 4096);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->bytes, kGiB - 4096);
  EXPECT_EQ(st->flags, BlockStatusFlags::kOffsetValid);
  EXPECT_EQ(st->map, 4096u);
  EXPECT_EQ(st->file, ctx.node_address());
}

TEST(NullCo, ReadZeroesClearsTheBufferAndReportsZero) {
  EventLoop loop;
  FakeOpenContext ctx(loop, {{"read-zeroes", true}, {"size", 1 << 20}});
  auto d = open_driver(loop, drivers::kNullCo, ctx);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ((*d)->length(), uint64_t{1} << 20);

  std::vector<uint8_t> buf(1000, 0xab);
  ASSERT_TRUE(testing::read(loop, **d, 3, buf));
  EXPECT_EQ(buf, std::vector<uint8_t>(1000, 0));

  auto st = testing::status(loop, **d, 512, 1024);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->bytes, 1024u);
  EXPECT_EQ(st->flags, BlockStatusFlags::kOffsetValid | BlockStatusFlags::kZero);
  EXPECT_EQ(st->map, 512u);
  EXPECT_EQ(st->file, ctx.node_address());
}

TEST(NullCo, WritesAreDiscarded) {
  EventLoop loop;
  FakeOpenContext ctx(loop, {{"read-zeroes", true}});
  auto d = open_driver(loop, drivers::kNullCo, ctx);
  ASSERT_TRUE(d);
  std::vector<uint8_t> data(512, 0x5a);
  ASSERT_TRUE(testing::write(loop, **d, 0, data));
  ASSERT_TRUE(testing::write(loop, **d, 512, data, ReqFlags::kFua));
  ASSERT_TRUE(run_sync(loop, (*d)->flush()));

  std::vector<uint8_t> back(1024, 0xff);
  ASSERT_TRUE(testing::read(loop, **d, 0, back));
  EXPECT_EQ(back, std::vector<uint8_t>(1024, 0));
}

TEST(NullCo, CannotResize) {
  EventLoop loop;
  FakeOpenContext ctx(loop, json::object());
  auto d = open_driver(loop, drivers::kNullCo, ctx);
  ASSERT_TRUE(d);
  auto r = run_sync(loop, (*d)->truncate(2 * kGiB, false, PreallocMode::kOff));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), ENOTSUP);
  EXPECT_EQ((*d)->length(), kGiB);
}

TEST(NullCo, KeyvalOptions) {
  EventLoop loop;
  auto opts = parse_keyval("size=64k,latency-ns=0,read-zeroes=on");
  ASSERT_TRUE(opts);
  FakeOpenContext ctx(loop, *opts, OptionSyntax::kKeyval);
  auto d = open_driver(loop, drivers::kNullCo, ctx);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ((*d)->length(), 65536u);
  std::vector<uint8_t> buf(16, 1);
  ASSERT_TRUE(testing::read(loop, **d, 0, buf));
  EXPECT_EQ(buf, std::vector<uint8_t>(16, 0));
}

struct BadOptions {
  json options;
  OptionSyntax syntax;
  std::string message;
};

TEST(NullCo, OptionErrors) {
  const BadOptions cases[] = {
      {{{"size", "1G"}}, OptionSyntax::kJson, "Parameter 'file.size' expects uint64"},
      {{{"size", "1.5G"}}, OptionSyntax::kKeyval, "Parameter 'file.size' expects size"},
      {{{"size", "9223372036854775807"}},
       OptionSyntax::kKeyval,
       "Parameter 'file.size' expects a size of at most 9223372035781033984"},
      {{{"read-zeroes", "on"}},
       OptionSyntax::kJson,
       "Invalid parameter type for 'file.read-zeroes', expected: boolean"},
      {{{"read-zeroes", "maybe"}},
       OptionSyntax::kKeyval,
       "Parameter 'file.read-zeroes' expects 'on' or 'off'"},
      {{{"latency-ns", -1}}, OptionSyntax::kJson, "Parameter 'file.latency-ns' expects uint64"},
      {{{"latency-ns", uint64_t{1} << 63}}, OptionSyntax::kJson, "latency-ns is invalid"},
      {{{"filename", "x"}}, OptionSyntax::kJson, "Parameter 'file.filename' is unexpected"},
  };
  for (const auto& c : cases) {
    EventLoop loop;
    FakeOpenContext ctx(loop, c.options, c.syntax, "file.");
    auto d = open_driver(loop, drivers::kNullCo, ctx);
    ASSERT_FALSE(d) << c.options.dump();
    EXPECT_EQ(d.error().message(), c.message) << c.options.dump();
    EXPECT_EQ(d.error().err(), EINVAL) << c.options.dump();
  }
}

// latency-ns delays every read, write and flush on the loop's timer.
TEST(NullCo, LatencyDelaysEachRequest) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kLatency = std::chrono::milliseconds(20);
  EventLoop loop;
  FakeOpenContext ctx(loop, {{"latency-ns", std::chrono::nanoseconds(kLatency).count()}});
  auto d = open_driver(loop, drivers::kNullCo, ctx);
  ASSERT_TRUE(d) << d.error().message();
  std::vector<uint8_t> buf(512);

  auto start = Clock::now();
  ASSERT_TRUE(testing::read(loop, **d, 0, buf));
  EXPECT_GE(Clock::now() - start, kLatency);

  start = Clock::now();
  ASSERT_TRUE(testing::write(loop, **d, 0, buf));
  EXPECT_GE(Clock::now() - start, kLatency);

  start = Clock::now();
  ASSERT_TRUE(run_sync(loop, (*d)->flush()));
  EXPECT_GE(Clock::now() - start, kLatency);
}

// Reads `buf` at offset 0 and records that it finished.
Task<void> read_and_mark(Driver* d, std::vector<uint8_t>* buf, bool* done) {
  auto task = d->preadv(0, buf->size(), IoVec(buf->data(), buf->size()), ReqFlags::kNone);
  auto r = co_await std::move(task);
  *done = r.has_value();
}

TEST(NullCo, OnlyLatencyGoesThroughTheLoop) {
  std::vector<uint8_t> buf(512);
  for (int64_t latency : {0, 1000}) {
    EventLoop loop;
    FakeOpenContext ctx(loop, {{"latency-ns", latency}});
    auto d = open_driver(loop, drivers::kNullCo, ctx);
    ASSERT_TRUE(d);
    bool done = false;
    spawn(read_and_mark(d->get(), &buf, &done));
    // Without latency the request completes inside the call, with no loop round trip.
    EXPECT_EQ(done, latency == 0) << "latency " << latency;
    loop.context().restart();  // run_sync in open_driver left the loop stopped
    loop.run();
    EXPECT_TRUE(done) << "latency " << latency;
  }
}

}  // namespace
}  // namespace strata
