// Active commit (mirror.h) over a real chain while a guest writes: three qcow2 images made by
// qemu-img in /dev/shm, file nodes with auto-read-only, the lower images read-only, the top
// read-write with a guest attached that writes all the time, as an export would. Four writers
// own disjoint 64 KiB slots (so no two writes in flight overlap and a shadow copy knows what
// the disk must hold); each write is recorded in the shadow when it completes.
//
// What is checked: the events, that the guest ends up on base after job-complete (on top after
// a cancel), that what the guest reads and what base holds equal the shadow, that writes
// never stall for good (not while the job is pending, not after a cancel), the base's
// read-only state and storage access, and qemu-img check of every image.
#include "mirror.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
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
#include "strata/job.h"
#include "strata/node.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kSize = 4 * kMiB;
constexpr uint64_t kSlot = 64 * kKiB;
constexpr int kImages = 3;
constexpr int kWriters = 4;
constexpr int kTurnsBetweenWrites = 16;

using test_shell::run;

JobOptions job(std::string id) {
  JobOptions o;
  o.id = std::move(id);
  return o;
}

class ActiveCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path("/dev/shm") / ("strata-mirror-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    // img-N backs img-(N+1) and holds pattern 0x10+N in its own MiB.
    for (int i = 0; i < kImages; ++i) {
      std::string cmd = "qemu-img create -q -f qcow2";
      if (i > 0) cmd += " -b " + image(i - 1) + " -F qcow2";
      ASSERT_EQ(run(cmd + " " + image(i) + " 4M"), "");
      ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -q -P " + std::to_string(0x10 + i) + " " +
                    std::to_string(i) + "M 1M' " + image(i)),
                "");
    }
    engine_ = std::make_unique<Engine>(loop_, builtin_drivers());
    jobs_ = std::make_unique<JobManager>(*engine_);
    jobs_->add_listener([this](std::string_view name, json data) {
      if (name == "JOB_STATUS_CHANGE") {
        events_.push_back(data["status"]);
      } else {
        events_.push_back(std::string(name));
        payloads_.push_back(data);
      }
    });
  }

  void TearDown() override {
    stop_writers();
    guest_.reset();
    if (jobs_) run_sync(loop_, jobs_->shutdown());
    jobs_.reset();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string image(int i) const {
    return (dir_ / ("img-" + std::to_string(i) + ".qcow2")).string();
  }

  // The chain with the guest on the top image; `fault` puts a fault-inject filter with these
  // options between format-0 and file-0.
  void build_graph(json fault = {}) {
    for (int i = 0; i < kImages; ++i) {
      std::string n = std::to_string(i);
      json file = {{"driver", "file"},
                   {"node-name", "file-" + n},
                   {"filename", image(i)},
                   {"auto-read-only", true}};
      ASSERT_TRUE(run_sync(loop_, engine_->add_node(file)).has_value());
      json format = {{"driver", "qcow2"}, {"node-name", "format-" + n}};
      format["read-only"] = i + 1 < kImages;
      format["file"] = "file-" + n;
      if (i == 0 && !fault.is_null()) {
        fault.update({{"driver", "fault-inject"}, {"node-name", "fault"}, {"file", "file-0"}});
        format["file"] = fault;
      }
      format["backing"] = i == 0 ? json(nullptr) : json("format-" + std::to_string(i - 1));
      auto added = run_sync(loop_, engine_->add_node(format));
      ASSERT_TRUE(added.has_value()) << added.error().message();
    }
    auto guest = engine_->attach_backend(*node("format-2"), "guest",
                                         Perm::kConsistentRead | Perm::kWrite, Perm::kAll);
    ASSERT_TRUE(guest.has_value()) << guest.error().message();
    guest_ = std::move(*guest);
    shadow_ = read_all(*guest_);
  }

  Node* node(const std::string& name) { return engine_->find_node(name); }
  std::string guest_node() const { return guest_->root().node().name(); }
  bool has_mirror_top() {
    for (Node* n : engine_->nodes()) {
      if (n->driver_class().name == "mirror_top") return true;
    }
    return false;
  }

  std::vector<uint8_t> read_all(BlockBackend& blk) {
    std::vector<uint8_t> buf(kSize);
    auto r = run_sync(loop_, blk.read(0, kSize, IoVec(buf.data(), buf.size())));
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return buf;
  }
  // What `name` holds by itself, read through a new user of it.
  std::vector<uint8_t> read_node(const std::string& name) {
    auto reader = engine_->attach_backend(*node(name), "", Perm::kConsistentRead, Perm::kAll);
    EXPECT_TRUE(reader.has_value()) << reader.error().message();
    if (!reader) return {};
    return read_all(**reader);
  }

  Result<Job*> start(JobOptions options, ActiveCommitArgs args) {
    return run_sync(loop_, start_active_commit_job(*jobs_, *engine_, std::move(options), args));
  }

  void turn() {
    loop_.context().restart();
    loop_.context().run_one();
  }
  void wait_for_event(const std::string& event) {
    for (int i = 0; i < 1000000; ++i) {
      if (std::find(events_.begin(), events_.end(), event) != events_.end()) return;
      turn();
    }
    FAIL() << "no " << event;
  }
  // Runs the loop until the writers have completed `n` more writes.
  void wait_for_writes(int n) {
    int target = writes_done_ + n;
    for (int i = 0; i < 1000000 && writes_done_ < target; ++i) turn();
    ASSERT_GE(writes_done_, target) << "the guest's writes stalled";
  }

  // One writer: writes of 512 B .. 64 KiB inside its own slots, each with a fresh pattern.
  Task<void> writer(int k) {
    std::mt19937 rng(1234 + k);
    std::vector<uint8_t> buf(kSlot);
    for (;;) {
      // Requests arrive from outside, as from an export's socket, a few turns of the loop
      // apart: a write that completes at once would otherwise never let the loop run, and a
      // guest that dirties more than the job can copy keeps a mirror from ever converging.
      for (int i = 0; i < turns_between_writes_; ++i) co_await loop_.yield();
      if (stop_) break;
      uint64_t slots = kSize / kSlot / kWriters;
      uint64_t slot = (rng() % slots) * kWriters + k;
      uint64_t len = (1 + rng() % (kSlot / 512)) * 512;
      uint64_t offset = slot * kSlot + (rng() % ((kSlot - len) / 512 + 1)) * 512;
      std::fill_n(buf.begin(), len, static_cast<uint8_t>(0x40 + (pattern_++ % 0x80)));
      auto write = guest_->write(offset, len, IoVec(buf.data(), len));
      auto written = co_await write;
      if (!written) {
        ++write_errors_;
      } else {
        std::copy_n(buf.begin(), len, shadow_.begin() + offset);
      }
      ++writes_done_;
    }
    --writers_running_;
  }
  void start_writers() {
    for (int k = 0; k < kWriters; ++k) {
      ++writers_running_;
      spawn(writer(k));
    }
  }
  void stop_writers() {
    stop_ = true;
    for (int i = 0; i < 1000000 && writers_running_ > 0; ++i) turn();
  }

  bool has_event(const std::string& name) const {
    return std::find(events_.begin(), events_.end(), name) != events_.end();
  }

  // After the engine is gone: every image checks clean, and img-0 alone holds the shadow.
  void check_images_on_disk(bool base_holds_shadow) {
    guest_.reset();
    run_sync(loop_, jobs_->shutdown());
    jobs_.reset();
    engine_.reset();
    for (int i = 0; i < kImages; ++i) {
      EXPECT_EQ(run("qemu-img check -q " + image(i)), "") << i;
    }
    if (!base_holds_shadow) return;
    std::string raw = (dir_ / "shadow.raw").string();
    std::ofstream(raw, std::ios::binary)
        .write(reinterpret_cast<const char*>(shadow_.data()), static_cast<long>(shadow_.size()));
    EXPECT_EQ(run("qemu-img compare -q -f raw -F qcow2 " + raw + " " + image(0)), "");
  }

  EventLoop loop_;
  std::filesystem::path dir_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<BlockBackend> guest_;
  std::vector<std::string> events_;
  std::vector<json> payloads_;
  std::vector<uint8_t> shadow_;
  bool stop_ = false;
  int turns_between_writes_ = kTurnsBetweenWrites;
  int writers_running_ = 0;
  int writes_done_ = 0;
  int write_errors_ = 0;
  unsigned pattern_ = 0;
};

TEST_F(ActiveCommitTest, PivotsToBaseWhileTheGuestWrites) {
  build_graph();
  ASSERT_FALSE(node("file-0")->driver().storage_read_write());
  start_writers();
  auto started = start(job("job0"), {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  EXPECT_EQ(guest_->root().node().driver_class().name, "mirror_top");
  EXPECT_TRUE(node("file-0")->driver().storage_read_write());
  wait_for_event("BLOCK_JOB_READY");
  EXPECT_EQ(payloads_.back()["type"], "commit");
  EXPECT_EQ(payloads_.back()["offset"], payloads_.back()["len"]);
  wait_for_writes(100);  // ready, and still copying what the guest writes
  ASSERT_TRUE(jobs_->complete("job0").has_value());
  wait_for_event("null");  // the writers go on all along, across the pivot
  wait_for_writes(100);    // now into base
  stop_writers();
  EXPECT_EQ(write_errors_, 0);
  EXPECT_EQ(events_,
            (std::vector<std::string>{"created", "running", "ready", "BLOCK_JOB_READY", "waiting",
                                      "pending", "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  // The guest now writes to base, which stays writable (it took the writable top's place).
  EXPECT_EQ(guest_node(), "format-0");
  EXPECT_FALSE(node("format-0")->is_read_only());
  EXPECT_TRUE(node("file-0")->driver().storage_read_write());
  EXPECT_FALSE(has_mirror_top());
  // The old top and the image between stay (the monitor added them), off the guest's path.
  EXPECT_TRUE(node("format-2")->parents().empty());
  EXPECT_EQ(read_all(*guest_), shadow_);
  check_images_on_disk(true);
}

TEST_F(ActiveCommitTest, WritesGoOnWhileThePivotWaitsForFinalize) {
  build_graph();
  start_writers();
  JobOptions o = job("job0");
  o.auto_finalize = false;
  auto started = start(o, {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("BLOCK_JOB_READY");
  ASSERT_TRUE(jobs_->complete("job0").has_value());
  wait_for_event("pending");
  // Pending may last as long as the user likes: the guest is not held up meanwhile.
  wait_for_writes(100);
  EXPECT_EQ(guest_->root().node().driver_class().name, "mirror_top");
  auto finalized = run_sync(loop_, jobs_->finalize("job0"));
  ASSERT_TRUE(finalized.has_value()) << finalized.error().message();
  wait_for_event("null");
  wait_for_writes(50);
  stop_writers();
  EXPECT_EQ(write_errors_, 0);
  EXPECT_EQ(guest_node(), "format-0");
  // What the guest wrote while the job was pending reached base too.
  EXPECT_EQ(read_all(*guest_), shadow_);
  check_images_on_disk(true);
}

TEST_F(ActiveCommitTest, SoftCancelOfAReadyJobLeavesBaseAConsistentCopyAndReadOnly) {
  build_graph();
  start_writers();
  auto started = start(job("job0"), {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("BLOCK_JOB_READY");
  wait_for_writes(50);
  stop_writers();
  // Let the job copy the last writes, then cancel without force: it completes, no pivot.
  for (int i = 0; i < 100 && node("format-2")->writes_in_flight() > 0; ++i) turn();
  auto cancelled = run_sync(loop_, jobs_->cancel("job0", false, JobApi::kBlockJob));
  ASSERT_TRUE(cancelled.has_value()) << cancelled.error().message();
  wait_for_event("null");
  EXPECT_TRUE(has_event("BLOCK_JOB_COMPLETED"));
  EXPECT_FALSE(has_event("BLOCK_JOB_CANCELLED"));
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_EQ(guest_node(), "format-2");
  EXPECT_FALSE(has_mirror_top());
  // Nobody writes base any more: it is read-only again (QEMU would leave it writable).
  EXPECT_TRUE(node("format-0")->is_read_only());
  EXPECT_FALSE(node("file-0")->driver().storage_read_write());
  EXPECT_EQ(read_all(*guest_), shadow_);
  EXPECT_EQ(read_node("format-0"), shadow_);
  // The guest still writes to top.
  stop_ = false;
  start_writers();
  wait_for_writes(20);
  stop_writers();
  EXPECT_EQ(read_all(*guest_), shadow_);
  check_images_on_disk(false);
}

TEST_F(ActiveCommitTest, ForcedCancelWhileRunningPutsTheGuestBackOnTop) {
  build_graph();
  start_writers();
  JobOptions o = job("job0");
  o.speed = 64 * kKiB;  // one chunk per slice: still copying when the cancel comes
  auto started = start(o, {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_writes(50);
  EXPECT_FALSE(has_event("ready"));
  // While it runs, the image between top and base refuses consistent reads to newcomers.
  auto reader = engine_->attach_backend(*node("format-1"), "", Perm::kConsistentRead, Perm::kAll);
  ASSERT_FALSE(reader.has_value());
  EXPECT_NE(reader.error().message().find("commit job 'job0'"), std::string::npos)
      << reader.error().message();
  auto cancelled = run_sync(loop_, jobs_->cancel("job0", true));
  ASSERT_TRUE(cancelled.has_value()) << cancelled.error().message();
  wait_for_event("null");
  EXPECT_TRUE(has_event("BLOCK_JOB_CANCELLED"));
  EXPECT_EQ(guest_node(), "format-2");
  EXPECT_FALSE(has_mirror_top());
  EXPECT_TRUE(node("format-0")->is_read_only());
  EXPECT_FALSE(node("file-0")->driver().storage_read_write());
  for (const char* name : {"format-2", "format-1"}) {
    EXPECT_FALSE(node(name)->child("backing")->frozen()) << name;
  }
  wait_for_writes(20);  // the guest was not left behind a closed gate
  stop_writers();
  EXPECT_EQ(write_errors_, 0);
  EXPECT_EQ(read_all(*guest_), shadow_);
  check_images_on_disk(false);
}

TEST_F(ActiveCommitTest, AForcedCancelUnderHeavyWritesPutsTheGuestBack) {
  build_graph();
  turns_between_writes_ = 1;
  // Writes every other turn of the loop: the job can hardly keep up (it may never be ready).
  start_writers();
  auto started = start(job("job0"), {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_writes(2000);
  auto cancelled = run_sync(loop_, jobs_->cancel("job0", true));
  ASSERT_TRUE(cancelled.has_value()) << cancelled.error().message();
  wait_for_event("null");
  EXPECT_TRUE(has_event("BLOCK_JOB_CANCELLED"));
  EXPECT_EQ(guest_node(), "format-2");
  EXPECT_FALSE(has_mirror_top());
  wait_for_writes(100);
  stop_writers();
  EXPECT_EQ(write_errors_, 0);
  EXPECT_EQ(read_all(*guest_), shadow_);
}

TEST_F(ActiveCommitTest, WriteErrorOnBaseStopsTheJobUntilResumed) {
  build_graph({{"kind", "write"}, {"errno", "ENOSPC"}});
  JobOptions o = job("job0");
  o.on_error = BlockdevOnError::kEnospc;
  auto started = start(o, {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("BLOCK_JOB_ERROR");
  EXPECT_EQ(payloads_.back(),
            (json{{"device", "job0"}, {"operation", "write"}, {"action", "stop"}}));
  wait_for_event("paused");
  ASSERT_TRUE(jobs_->resume("job0").has_value());
  wait_for_event("BLOCK_JOB_READY");
  ASSERT_TRUE(jobs_->complete("job0").has_value());
  wait_for_event("null");
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_EQ(guest_node(), "format-0");
  EXPECT_EQ(read_all(*guest_), shadow_);
}

TEST_F(ActiveCommitTest, AConflictingUserOfBaseRefusesTheJobAndNothingChanges) {
  build_graph();
  // A reader of base that does not let anyone write it (QEMU iotest 249's other user).
  auto reader = engine_->attach_backend(*node("format-0"), "reader", Perm::kConsistentRead,
                                        Perm::kConsistentRead | Perm::kWriteUnchanged);
  ASSERT_TRUE(reader.has_value());
  auto started = start(job("job0"), {node("format-2"), node("format-0")});
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message().find("reader"), std::string::npos)
      << started.error().message();
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "null"}));
  EXPECT_EQ(guest_node(), "format-2");
  EXPECT_FALSE(has_mirror_top());
  EXPECT_TRUE(node("format-0")->is_read_only());
  EXPECT_FALSE(node("file-0")->driver().storage_read_write());
  for (const char* name : {"format-2", "format-1"}) {
    EXPECT_FALSE(node(name)->child("backing")->frozen()) << name;
  }
  EXPECT_EQ(read_all(*guest_), shadow_);
  // A bad job id is refused before the job exists: no events at all.
  events_.clear();
  auto bad = start(job("0bad"), {node("format-2"), node("format-0")});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(), "Invalid job ID '0bad'");
  EXPECT_TRUE(events_.empty());
  EXPECT_FALSE(has_mirror_top());
  EXPECT_EQ(guest_node(), "format-2");
  EXPECT_TRUE(node("format-0")->is_read_only());
}

}  // namespace
}  // namespace strata
