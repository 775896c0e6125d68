// The fixture of the stream job's tests (stream_test.cpp, stream_writers_test.cpp): a real
// chain, graph as in QEMU iotest 247 (file nodes with auto-read-only, qcow2 nodes read-only
// with backing by reference), images made by qemu-img and qemu-io in /dev/shm, and a slow-read
// test filter. Included by test files only; everything here has internal linkage.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "../shell.h"
#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/filter.h"
#include "strata/job.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "stream.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kSlot = 64 * kKiB;
constexpr uint64_t kSize = 1024 * kKiB;
constexpr int kImages = 4;

using test_shell::run;

inline Task<void> write_pattern(BlockBackend* blk, uint64_t offset, uint64_t bytes, uint8_t pattern,
                                int* done) {
  std::vector<uint8_t> buf(bytes, pattern);
  auto write = blk->write(offset, bytes, IoVec(buf.data(), bytes));
  auto written = co_await write;
  EXPECT_TRUE(written.has_value());
  ++*done;
}

// A test filter whose reads take 20 turns of the event loop before they pass through, and
// which counts how many of them are under way at once.
int g_reads_in_flight = 0;
int g_max_reads_in_flight = 0;
int g_reads_started = 0;

class SlowReadDriver final : public FilterDriver {
 public:
  SlowReadDriver(Child& file, EventLoop& loop) : FilterDriver(file), loop_(&loop) {}
  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    ++g_reads_started;
    g_max_reads_in_flight = std::max(g_max_reads_in_flight, ++g_reads_in_flight);
    for (int i = 0; i < 20; ++i) {
      auto turn = loop_->yield();
      co_await turn;
    }
    auto read = FilterDriver::preadv(offset, bytes, std::move(iov), flags);
    auto result = co_await read;
    --g_reads_in_flight;
    co_return result;
  }

 private:
  EventLoop* loop_;
};

inline Task<Result<std::unique_ptr<Driver>>> open_slow_read(OpenContext& ctx) {
  auto open = ctx.open_child("file", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto child = co_await open;
  if (!child) co_return child.error();
  co_return std::unique_ptr<Driver>(std::make_unique<SlowReadDriver>(**child, ctx.loop()));
}

const DriverClass kSlowRead = {"slow-read", DriverKind::kFilter, &open_slow_read};

inline std::vector<const DriverClass*> test_drivers() {
  std::vector<const DriverClass*> drivers(builtin_drivers().begin(), builtin_drivers().end());
  drivers.push_back(&kSlowRead);
  return drivers;
}

class StreamJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path("/dev/shm") / ("strata-stream-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    create_images();
    if (HasFatalFailure()) return;
    engine_ = std::make_unique<Engine>(loop_, drivers_);
    jobs_ = std::make_unique<JobManager>(*engine_);
    jobs_->add_listener([this](std::string_view name, json data) {
      if (name == "JOB_STATUS_CHANGE") {
        std::string status = data["status"];
        events_.push_back(status);
        if (Node* f = engine_->find_node("file-3")) {
          storage_rw_[status] = f->driver().storage_read_write();
        }
      } else {
        events_.push_back(std::string(name));
        payloads_.push_back(data);
      }
    });
  }

  void TearDown() override {
    guest_.reset();
    if (jobs_) run_sync(loop_, jobs_->shutdown());
    jobs_.reset();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  // img-N backs img-(N+1); image N holds pattern 0x10+N in its own 64 KiB slot N.
  virtual void create_images() {
    for (int i = 0; i < images_; ++i) {
      create_image(i, "1M");
      ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -q -P " + std::to_string(0x10 + i) + " " +
                    std::to_string(i * kSlot) + " 64k' " + image(i)),
                "");
    }
  }
  // An empty qcow2 image backed by the one before it.
  void create_image(int i, const std::string& size) {
    std::string cmd = "qemu-img create -q -f qcow2";
    if (i > 0) cmd += " -b " + image(i - 1) + " -F qcow2";
    ASSERT_EQ(run(cmd + " " + image(i) + " " + size), "");
  }

  std::string image(int i) const {
    return (dir_ / ("img-" + std::to_string(i) + ".qcow2")).string();
  }

  // 247's graph. `writable` opens format-3 read-write with a writing guest; `fault` puts a
  // fault-inject filter with these options between format-N and file-N.
  void build_graph(bool writable = false, int fault_at = -1, json fault = {}) {
    for (int i = 0; i < images_; ++i) {
      std::string n = std::to_string(i);
      json file = {{"driver", "file"},
                   {"node-name", "file-" + n},
                   {"filename", image(i)},
                   {"auto-read-only", true}};
      ASSERT_TRUE(run_sync(loop_, engine_->add_node(file)).has_value());
      json format = {{"driver", "qcow2"},
                     {"node-name", "format-" + n},
                     {"read-only", !(writable && i == images_ - 1)}};
      format["file"] = "file-" + n;
      if (i == fault_at && fault.contains("driver")) {
        format["file"] = {
            {"driver", fault["driver"]}, {"node-name", "slow"}, {"file", "file-" + n}};
      } else if (i == fault_at) {
        // Disarmed while the image opens; arm_fault() arms it.
        format["file"] = {{"driver", "fault-inject"},
                          {"node-name", "fault"},
                          {"file", "file-" + n},
                          {"kind", "flush"},
                          {"nth", 1000000}};
      }
      format["backing"] = i == 0 ? json(nullptr) : json("format-" + std::to_string(i - 1));
      auto added = run_sync(loop_, engine_->add_node(format));
      ASSERT_TRUE(added.has_value()) << added.error().message();
    }
    Perm perm = writable ? Perm::kConsistentRead | Perm::kWrite : Perm::kConsistentRead;
    auto guest = engine_->attach_backend(*node(top()), "", perm, Perm::kAll);
    ASSERT_TRUE(guest.has_value()) << guest.error().message();
    guest_ = std::move(*guest);
    if (fault_at >= 0 && !fault.contains("driver")) {
      fault["node-name"] = "fault";
      if (!fault.contains("nth")) fault["nth"] = 1;
      auto armed = run_sync(loop_, engine_->reopen({fault}, OptionSyntax::kJson, true));
      ASSERT_TRUE(armed.has_value()) << armed.error().message();
    }
  }

  Node* node(const std::string& name) { return engine_->find_node(name); }
  std::string top() const { return "format-" + std::to_string(images_ - 1); }
  std::string backing_of(const std::string& name) {
    Child* c = node(name)->child("backing");
    return c != nullptr ? c->node().name() : "";
  }
  bool has_driver(std::string_view driver) {
    for (Node* n : engine_->nodes()) {
      if (n->driver_class().name == driver) return true;
    }
    return false;
  }

  Result<Job*> stream(JobOptions options, StreamArgs args) {
    return run_sync(loop_, start_stream_job(*jobs_, *engine_, std::move(options), args));
  }

  void wait_for_event(const std::string& event) {
    for (int i = 0; i < 100000; ++i) {
      if (std::find(events_.begin(), events_.end(), event) != events_.end()) return;
      loop_.context().restart();
      loop_.context().run_one();
    }
    FAIL() << "no " << event;
  }

  std::vector<uint8_t> guest_read() {
    std::vector<uint8_t> buf(guest_->size());
    auto r = run_sync(loop_, guest_->read(0, buf.size(), IoVec(buf.data(), buf.size())));
    EXPECT_TRUE(r.has_value());
    return buf;
  }
  static std::vector<uint8_t> expected_content() {
    std::vector<uint8_t> buf(kSize, 0);
    for (int i = 0; i < kImages; ++i) {
      std::fill_n(buf.begin() + i * kSlot, kSlot, static_cast<uint8_t>(0x10 + i));
    }
    return buf;
  }
  bool allocated_in(const std::string& name, uint64_t offset) {
    auto st = run_sync(loop_, node(name)->block_status(offset, kSlot));
    EXPECT_TRUE(st.has_value());
    return st && has_flag(st->flags, BlockStatusFlags::kAllocated);
  }
  void close_all() {
    guest_.reset();
    run_sync(loop_, jobs_->shutdown());
    jobs_.reset();
    engine_.reset();
  }

  std::vector<const DriverClass*> drivers_ = test_drivers();
  int images_ = kImages;
  EventLoop loop_;
  std::filesystem::path dir_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<BlockBackend> guest_;
  std::vector<std::string> events_;
  std::vector<json> payloads_;
  std::map<std::string, bool> storage_rw_;
};

inline JobOptions job(std::string id) {
  JobOptions o;
  o.id = std::move(id);
  return o;
}

inline StreamArgs args_of(Node* device, Node* base, Node* bottom = nullptr) {
  StreamArgs a;
  a.device = device;
  a.base = base;
  a.bottom = bottom;
  return a;
}

}  // namespace
}  // namespace strata
