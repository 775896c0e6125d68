// The copy-on-read filter over a real qcow2 chain (base <- mid <- top, made by qemu-img in
// /dev/shm): what reads return, what they copy into top (and what they leave alone with
// `bottom`), the permissions it takes, the chain it freezes, and a guest write racing a copy of
// the same range, made deterministic by a gate filter under base that holds the copy's read.
#include <gtest/gtest.h>
#include <unistd.h>

#include <coroutine>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../shell.h"
#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/filter.h"
#include "strata/node.h"
#include "strata/open_context.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kCluster = 64 * kKiB;

using test_shell::run;

// ---- the gate: a filter whose next read waits until the test opens it ----

struct Gate {
  bool armed = false;
  std::coroutine_handle<> held;
};
Gate* g_gate = nullptr;

class GateDriver final : public FilterDriver {
 public:
  explicit GateDriver(Child& file) : FilterDriver(file) {}
  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    if (g_gate != nullptr && g_gate->armed) {
      g_gate->armed = false;
      co_await Hold{};
    }
    auto task = FilterDriver::preadv(offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }

 private:
  struct Hold {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const noexcept { g_gate->held = h; }
    void await_resume() const noexcept {}
  };
};

Task<Result<std::unique_ptr<Driver>>> open_gate(OpenContext& ctx) {
  auto open = ctx.open_child("file", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto child = co_await open;
  if (!child) co_return child.error();
  co_return std::unique_ptr<Driver>(std::make_unique<GateDriver>(**child));
}

const DriverClass kGate{"gate", DriverKind::kFilter, &open_gate};

Task<void> write_pattern(BlockBackend* blk, uint64_t offset, uint64_t bytes, uint8_t pattern,
                         Result<void>* out, bool* done) {
  std::vector<uint8_t> buf(bytes, pattern);
  auto write = blk->write(offset, bytes, IoVec(buf.data(), bytes));
  *out = co_await write;
  *done = true;
}

Task<void> read_into(BlockBackend* blk, uint64_t offset, std::vector<uint8_t>* buf,
                     Result<void>* out, bool* done) {
  auto read = blk->read(offset, buf->size(), IoVec(buf->data(), buf->size()));
  *out = co_await read;
  *done = true;
}

class CopyOnReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path("/dev/shm") / ("strata-cor-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    // base holds 0x11 in cluster 0 and 0x12 in cluster 2; mid holds 0x21 in cluster 1.
    ASSERT_EQ(run("qemu-img create -q -f qcow2 " + image("base") + " 1M"), "");
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -q -P 0x11 0 64k' -c 'write -q -P 0x12 128k 64k' " +
                  image("base")),
              "");
    ASSERT_EQ(run("qemu-img create -q -f qcow2 -b " + image("base") + " -F qcow2 " + image("mid") +
                  " 1M"),
              "");
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -q -P 0x21 64k 64k' " + image("mid")), "");
    ASSERT_EQ(
        run("qemu-img create -q -f qcow2 -b " + image("mid") + " -F qcow2 " + image("top") + " 1M"),
        "");
    drivers_.assign(builtin_drivers().begin(), builtin_drivers().end());
    drivers_.push_back(&kGate);
    engine_ = std::make_unique<Engine>(loop_, drivers_);
    g_gate = &gate_;
  }

  void TearDown() override {
    guest_.reset();
    engine_.reset();
    g_gate = nullptr;
    std::filesystem::remove_all(dir_);
  }

  std::string image(const std::string& name) const { return (dir_ / (name + ".qcow2")).string(); }

  // base <- mid <- top; base's file sits under a gate.
  void build_chain(bool top_read_only = false) {
    json file = {{"driver", "file"}, {"filename", image("base")}};
    add({{"driver", "qcow2"},
         {"node-name", "base"},
         {"file", {{"driver", "gate"}, {"file", file}}}});
    add({{"driver", "qcow2"},
         {"node-name", "mid"},
         {"file", {{"driver", "file"}, {"filename", image("mid")}}},
         {"backing", "base"}});
    add({{"driver", "qcow2"},
         {"node-name", "top"},
         {"read-only", top_read_only},
         {"file", {{"driver", "file"}, {"filename", image("top")}}},
         {"backing", "mid"}});
  }

  void add(json options) {
    auto added = run_sync(loop_, engine_->add_node(std::move(options)));
    ASSERT_TRUE(added.has_value()) << added.error().message();
  }

  Result<Node*> add_cor(json extra = json::object()) {
    json options = {{"driver", "copy-on-read"}, {"node-name", "cor"}, {"file", "top"}};
    options.update(extra);
    return run_sync(loop_, engine_->add_node(options));
  }

  void attach_guest(Perm perm = Perm::kConsistentRead | Perm::kWrite) {
    auto guest = engine_->attach_backend(*node("cor"), "", perm, Perm::kAll);
    ASSERT_TRUE(guest.has_value()) << guest.error().message();
    guest_ = std::move(*guest);
  }

  Node* node(const std::string& name) { return engine_->find_node(name); }

  std::vector<uint8_t> guest_read(uint64_t offset, uint64_t bytes) {
    std::vector<uint8_t> buf(bytes);
    auto r = run_sync(loop_, guest_->read(offset, bytes, IoVec(buf.data(), bytes)));
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return buf;
  }

  bool allocated_in(const std::string& name, uint64_t offset) {
    auto st = run_sync(loop_, node(name)->block_status(offset, kCluster));
    EXPECT_TRUE(st.has_value());
    return st && has_flag(st->flags, BlockStatusFlags::kAllocated);
  }

  // Runs the loop until `done` or a bounded number of steps.
  void pump_until(const bool& done) {
    for (int i = 0; i < 100000 && !done; ++i) {
      loop_.context().restart();
      loop_.context().run_one();
    }
  }
  void pump_idle() {
    loop_.context().restart();
    loop_.context().poll();
  }

  EventLoop loop_;
  std::filesystem::path dir_;
  std::vector<const DriverClass*> drivers_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<BlockBackend> guest_;
  Gate gate_;
};

std::vector<uint8_t> filled(uint64_t bytes, uint8_t value) {
  return std::vector<uint8_t>(bytes, value);
}

TEST_F(CopyOnReadTest, ReadsTheChainAndCopiesWhatTopLacks) {
  build_chain();
  ASSERT_TRUE(add_cor().has_value());
  attach_guest();
  EXPECT_FALSE(allocated_in("top", 0));
  EXPECT_EQ(guest_read(0, 3 * kCluster)[0], 0x11);
  std::vector<uint8_t> whole = guest_read(0, 3 * kCluster);
  EXPECT_EQ(std::vector<uint8_t>(whole.begin(), whole.begin() + kCluster), filled(kCluster, 0x11));
  EXPECT_EQ(std::vector<uint8_t>(whole.begin() + kCluster, whole.begin() + 2 * kCluster),
            filled(kCluster, 0x21));
  EXPECT_EQ(std::vector<uint8_t>(whole.begin() + 2 * kCluster, whole.end()),
            filled(kCluster, 0x12));
  // Copied from both lower layers; the unallocated rest of the chain was not.
  EXPECT_TRUE(allocated_in("top", 0));
  EXPECT_TRUE(allocated_in("top", kCluster));
  EXPECT_TRUE(allocated_in("top", 2 * kCluster));
  EXPECT_FALSE(allocated_in("top", 3 * kCluster));
  guest_read(3 * kCluster, kCluster);
  EXPECT_FALSE(allocated_in("top", 3 * kCluster));
}

TEST_F(CopyOnReadTest, BottomLimitsWhatIsCopied) {
  build_chain();
  ASSERT_TRUE(add_cor({{"bottom", "mid"}}).has_value());
  attach_guest();
  std::vector<uint8_t> whole = guest_read(0, 2 * kCluster);
  EXPECT_EQ(whole[0], 0x11);             // still read from base...
  EXPECT_FALSE(allocated_in("top", 0));  // ...but base is below bottom: not copied
  EXPECT_EQ(whole[kCluster], 0x21);
  EXPECT_TRUE(allocated_in("top", kCluster));
}

TEST_F(CopyOnReadTest, BottomErrors) {
  build_chain();
  auto missing = add_cor({{"bottom", "nope"}});
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().message(), "Bottom node 'nope' not found");
  add({{"driver", "fault-inject"}, {"node-name", "flt"}, {"file", {{"driver", "null-co"}}}});
  auto filter = add_cor({{"bottom", "flt"}});
  ASSERT_FALSE(filter.has_value());
  EXPECT_EQ(filter.error().message(), "Bottom node 'flt' is a filter");
  EXPECT_EQ(node("cor"), nullptr);
}

TEST_F(CopyOnReadTest, FreezesTheChainDownToBottomWhileItExists) {
  build_chain();
  ASSERT_TRUE(add_cor({{"bottom", "mid"}}).has_value());
  EXPECT_TRUE(node("cor")->child("file")->frozen());
  EXPECT_TRUE(node("top")->child("backing")->frozen());
  EXPECT_FALSE(node("mid")->child("backing")->frozen());  // the link below bottom stays free
  auto moved = engine_->replace_child(*node("top")->child("backing"), *node("base"));
  ASSERT_FALSE(moved.has_value());
  EXPECT_EQ(moved.error().message(), "Cannot change 'backing' link to 'mid'");
  ASSERT_TRUE(run_sync(loop_, engine_->delete_node("cor")).has_value());
  EXPECT_FALSE(node("top")->child("backing")->frozen());
}

// QEMU's cor_child_perm: the parents' read, write and resize pass through, WRITE_UNCHANGED is
// always taken and always shared.
TEST_F(CopyOnReadTest, Permissions) {
  build_chain();
  ASSERT_TRUE(add_cor().has_value());
  Child* file = node("cor")->child("file");
  EXPECT_EQ(file->perm(), Perm::kWriteUnchanged);
  EXPECT_EQ(file->shared(), Perm::kAll);
  auto reader =
      engine_->attach_backend(*node("cor"), "", Perm::kConsistentRead, Perm::kConsistentRead);
  ASSERT_TRUE(reader.has_value());
  EXPECT_EQ(file->perm(), Perm::kConsistentRead | Perm::kWriteUnchanged);
  EXPECT_EQ(file->shared(), Perm::kConsistentRead | Perm::kWriteUnchanged);
  // The reader shares no WRITE: a writer cannot come in; it can write "unchanged" data.
  auto writer = engine_->attach_backend(*node("top"), "", Perm::kWrite, Perm::kAll);
  EXPECT_FALSE(writer.has_value());
  reader->reset();
  auto writer2 =
      engine_->attach_backend(*node("cor"), "", Perm::kWrite | Perm::kResize, Perm::kAll);
  ASSERT_TRUE(writer2.has_value());
  EXPECT_EQ(file->perm(), Perm::kWrite | Perm::kWriteUnchanged | Perm::kResize);
}

TEST_F(CopyOnReadTest, ReadOnlyFileIsRefused) {
  build_chain(/*top_read_only=*/true);
  auto cor = add_cor();
  ASSERT_FALSE(cor.has_value());
  EXPECT_EQ(cor.error().message(), "Block node is read-only");
  EXPECT_EQ(node("cor"), nullptr);
}

// A guest write to a range whose copy is under way waits for the copy; without that the copy
// would write base's older data over the guest's.
TEST_F(CopyOnReadTest, WriteRacingACopyOfTheSameRangeWins) {
  build_chain();
  ASSERT_TRUE(add_cor().has_value());
  attach_guest();
  gate_.armed = true;
  std::vector<uint8_t> read_buf(kCluster);
  Result<void> read_result;
  bool read_done = false;
  spawn(read_into(guest_.get(), 0, &read_buf, &read_result, &read_done));
  pump_idle();
  ASSERT_TRUE(gate_.held) << "the copy's read did not reach base";
  ASSERT_FALSE(read_done);

  Result<void> write_result;
  bool write_done = false;
  spawn(write_pattern(guest_.get(), 4 * kKiB, 8 * kKiB, 0x77, &write_result, &write_done));
  pump_idle();
  EXPECT_FALSE(write_done) << "the write overtook the copy of its range";

  std::coroutine_handle<> held = std::exchange(gate_.held, nullptr);
  loop_.post([held] { held.resume(); });
  pump_until(read_done);
  pump_until(write_done);
  ASSERT_TRUE(read_result.has_value()) << read_result.error().message();
  ASSERT_TRUE(write_result.has_value()) << write_result.error().message();
  EXPECT_EQ(read_buf, filled(kCluster, 0x11));  // the read saw the data before the write

  std::vector<uint8_t> want = filled(kCluster, 0x11);
  std::fill_n(want.begin() + 4 * kKiB, 8 * kKiB, 0x77);
  EXPECT_EQ(guest_read(0, kCluster), want);
  auto direct = engine_->attach_backend(*node("top"), "", Perm::kConsistentRead, Perm::kAll);
  ASSERT_TRUE(direct.has_value());
  std::vector<uint8_t> in_top(kCluster);
  ASSERT_TRUE(run_sync(loop_, (*direct)->read(0, kCluster, IoVec(in_top.data(), kCluster))));
  EXPECT_EQ(in_top, want);
}

// A write elsewhere is not held up by a copy in flight.
TEST_F(CopyOnReadTest, WriteToAnotherRangeDoesNotWait) {
  build_chain();
  ASSERT_TRUE(add_cor().has_value());
  attach_guest();
  gate_.armed = true;
  std::vector<uint8_t> read_buf(kCluster);
  Result<void> read_result;
  bool read_done = false;
  spawn(read_into(guest_.get(), 0, &read_buf, &read_result, &read_done));
  pump_idle();
  ASSERT_TRUE(gate_.held);
  Result<void> write_result;
  bool write_done = false;
  spawn(write_pattern(guest_.get(), 8 * kCluster, kCluster, 0x55, &write_result, &write_done));
  pump_until(write_done);
  EXPECT_TRUE(write_done);
  EXPECT_FALSE(read_done);
  std::coroutine_handle<> held = std::exchange(gate_.held, nullptr);
  loop_.post([held] { held.resume(); });
  pump_until(read_done);
  EXPECT_TRUE(read_result.has_value());
  EXPECT_EQ(read_buf, filled(kCluster, 0x11));
}

}  // namespace
}  // namespace strata
