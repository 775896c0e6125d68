// The stream job over a real chain, graph as in QEMU iotest 247 (file nodes with
// auto-read-only, qcow2 nodes read-only with backing by reference), images made by qemu-img and
// qemu-io in /dev/shm: events, the data, the device's backing link and backing-file string,
// the device's access before, during and after, cancel, error policies, and guest writes racing
// the stream.
#include "stream.h"

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

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/filter.h"
#include "strata/job.h"
#include "strata/node.h"
#include "strata/open_context.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kSlot = 64 * kKiB;
constexpr uint64_t kSize = 1024 * kKiB;
constexpr int kImages = 4;

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (status != 0) out = "FAILED(" + std::to_string(status) + "): " + out;
  return out;
}

Task<void> write_pattern(BlockBackend* blk, uint64_t offset, uint64_t bytes, uint8_t pattern,
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

Task<Result<std::unique_ptr<Driver>>> open_slow_read(OpenContext& ctx) {
  auto open = ctx.open_child("file", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto child = co_await open;
  if (!child) co_return child.error();
  co_return std::unique_ptr<Driver>(std::make_unique<SlowReadDriver>(**child, ctx.loop()));
}

const DriverClass kSlowRead = {"slow-read", DriverKind::kFilter, &open_slow_read};

std::vector<const DriverClass*> test_drivers() {
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

JobOptions job(std::string id) {
  JobOptions o;
  o.id = std::move(id);
  return o;
}

StreamArgs args_of(Node* device, Node* base, Node* bottom = nullptr) {
  StreamArgs a;
  a.device = device;
  a.base = base;
  a.bottom = bottom;
  return a;
}

TEST_F(StreamJobTest, StreamsIntoAReadOnlyNodeAboveBase) {
  build_graph();
  ASSERT_TRUE(node("format-3")->is_read_only());
  ASSERT_FALSE(node("file-3")->driver().storage_read_write());
  auto started = stream(job("job0"), args_of(node("format-3"), node("format-1")));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "running", "waiting", "pending",
                                               "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  ASSERT_EQ(payloads_.size(), 1u);
  EXPECT_EQ(payloads_[0], (json{{"type", "stream"},
                                {"device", "job0"},
                                {"len", kSize},
                                {"offset", kSize},
                                {"speed", 0}}));
  // Writable exactly while the job ran.
  EXPECT_TRUE(storage_rw_["running"]);
  EXPECT_FALSE(node("file-3")->driver().storage_read_write());
  EXPECT_TRUE(node("format-3")->is_read_only());
  EXPECT_EQ(backing_of("format-3"), "format-1");
  EXPECT_TRUE(node("format-2")->parents().empty());
  EXPECT_FALSE(has_driver("copy-on-read"));
  EXPECT_EQ(guest_read(), expected_content());
  // Slot 2 was copied up; slots 0 and 1 stay in base's chain.
  EXPECT_TRUE(allocated_in("format-3", 2 * kSlot));
  EXPECT_FALSE(allocated_in("format-3", kSlot));
  EXPECT_FALSE(allocated_in("format-3", 0));
  EXPECT_FALSE(node("format-3")->child("backing")->frozen());
  close_all();
  EXPECT_NE(run("qemu-img info -U --output=json " + image(3))
                .find("\"backing-filename\": \"" + image(1) + "\""),
            std::string::npos);
  EXPECT_EQ(run("qemu-img check -q " + image(3)), "");
}

TEST_F(StreamJobTest, WholeChainWithBackingStringAndNoBaseLeavesNoBacking) {
  build_graph();
  auto started = stream(job("job0"), args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_EQ(backing_of("format-3"), "");
  EXPECT_EQ(guest_read(), expected_content());
  close_all();
  EXPECT_EQ(run("qemu-img info -U --output=json " + image(3)).find("backing-filename"),
            std::string::npos);
  // Without its chain the image alone holds every slot.
  std::string cmd = "qemu-io -r -f qcow2";
  for (int i = 0; i < kImages; ++i) {
    cmd +=
        " -c 'read -q -P " + std::to_string(0x10 + i) + " " + std::to_string(i * kSlot) + " 64k'";
  }
  EXPECT_EQ(run(cmd + " " + image(3)), "");
}

TEST_F(StreamJobTest, BottomAndAnExplicitBackingFileString) {
  build_graph();
  StreamArgs a = args_of(node("format-3"), nullptr, node("format-2"));
  auto started = stream(job("job0"), a);
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_EQ(backing_of("format-3"), "format-1");
  EXPECT_EQ(guest_read(), expected_content());

  a = args_of(node("format-3"), node("format-0"));
  a.backing_file = "custom-name.qcow2";
  events_.clear();
  started = stream(job("job1"), a);
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_EQ(backing_of("format-3"), "format-0");
  close_all();
  EXPECT_NE(run("qemu-img info -U --output=json " + image(3))
                .find("\"backing-filename\": \"custom-name.qcow2\""),
            std::string::npos);
}

TEST_F(StreamJobTest, BaseOutsideTheChainIsRefused) {
  build_graph();
  auto started = stream(job("job0"), args_of(node("format-1"), node("format-3")));
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().message(), "'format-3' is not in the backing chain of 'format-1'");
  EXPECT_TRUE(events_.empty());
}

TEST_F(StreamJobTest, CancelRestoresReadOnlyAndTheChain) {
  build_graph();
  JobOptions o = job("job0");
  o.speed = 4096;  // one chunk per slice at most: slow enough to cancel mid-way
  auto started = stream(o, args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("running");
  EXPECT_TRUE(node("file-3")->driver().storage_read_write());
  EXPECT_EQ(guest_->node().driver_class().name, "copy-on-read");
  EXPECT_TRUE(node("format-3")->child("backing")->frozen());
  // Intermediate nodes refuse writers while the job runs.
  auto writer = engine_->attach_backend(*node("format-1"), "", Perm::kWrite, Perm::kAll);
  ASSERT_FALSE(writer.has_value());
  EXPECT_NE(writer.error().message().find("stream job 'job0'"), std::string::npos)
      << writer.error().message();
  ASSERT_TRUE(run_sync(loop_, jobs_->cancel("job0", true)).has_value());
  wait_for_event("null");
  EXPECT_NE(std::find(events_.begin(), events_.end(), "BLOCK_JOB_CANCELLED"), events_.end());
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_TRUE(node("format-3")->is_read_only());
  EXPECT_FALSE(node("file-3")->driver().storage_read_write());
  EXPECT_FALSE(has_driver("copy-on-read"));
  EXPECT_EQ(&guest_->node(), node("format-3"));
  EXPECT_FALSE(node("format-3")->child("backing")->frozen());
  EXPECT_EQ(guest_read(), expected_content());
}

TEST_F(StreamJobTest, SetupFailureOnANodeWithoutOtherUsersUndoesEverything) {
  build_graph();
  guest_.reset();  // the filter's only parent will be the job's own handle
  // A writer of an intermediate image: the job's edge on it cannot be had.
  ASSERT_TRUE(run_sync(loop_, engine_->set_read_only(*node("format-1"), false)).has_value());
  auto writer = engine_->attach_backend(*node("format-1"), "writer", Perm::kWrite, Perm::kAll);
  ASSERT_TRUE(writer.has_value()) << writer.error().message();
  auto started = stream(job("job0"), args_of(node("format-3"), nullptr));
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message().find("writer"), std::string::npos)
      << started.error().message();
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "null"}));
  EXPECT_FALSE(has_driver("copy-on-read"));
  EXPECT_TRUE(node("format-3")->parents().empty());
  EXPECT_TRUE(node("format-3")->is_read_only());
  EXPECT_FALSE(node("file-3")->driver().storage_read_write());
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_FALSE(node("format-3")->child("backing")->frozen());
  // The graph still works: the same stream starts once the writer has gone.
  writer->reset();
  events_.clear();
  started = stream(job("job1"), args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_EQ(backing_of("format-3"), "");
}

TEST_F(StreamJobTest, ReadErrorReportFailsAndKeepsTheBacking) {
  // format-2's storage fails a read of guest data (its header and tables were read at open).
  build_graph(false, 2, {{"kind", "read"}, {"errno", "EIO"}});
  auto started = stream(job("job0"), args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "running", "BLOCK_JOB_ERROR", "aborting",
                                               "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  EXPECT_NE(payloads_.back()["error"].get<std::string>().find("Input/output error"),
            std::string::npos);
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_TRUE(node("format-3")->is_read_only());
  EXPECT_FALSE(node("file-3")->driver().storage_read_write());
  EXPECT_FALSE(has_driver("copy-on-read"));
}

TEST_F(StreamJobTest, ReadErrorStopPausesAndRetriesAfterResume) {
  build_graph(false, 2, {{"kind", "read"}, {"errno", "EIO"}});
  JobOptions o = job("job0");
  o.on_error = BlockdevOnError::kStop;
  auto started = stream(o, args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("BLOCK_JOB_ERROR");
  EXPECT_EQ(payloads_.back(),
            (json{{"device", "job0"}, {"operation", "read"}, {"action", "stop"}}));
  wait_for_event("paused");
  ASSERT_TRUE(jobs_->resume("job0").has_value());
  wait_for_event("null");
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_EQ(backing_of("format-3"), "");
  EXPECT_EQ(guest_read(), expected_content());
}

// QEMU's stream ignores the error and goes on, but then fails, so the backing stays.
TEST_F(StreamJobTest, ReadErrorIgnoreCopiesTheRestButFails) {
  // Data past the first chunk, which the failed request covers.
  ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -q -P 0x44 768k 64k' " + image(0)), "");
  build_graph(false, 2, {{"kind", "read"}, {"errno", "EIO"}});
  JobOptions o = job("job0");
  o.on_error = BlockdevOnError::kIgnore;
  auto started = stream(o, args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_NE(payloads_.back()["error"].get<std::string>().find("Input/output error"),
            std::string::npos);
  EXPECT_EQ(payloads_.back()["offset"], kSize);
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_FALSE(allocated_in("format-3", 0));          // the chunk that failed
  EXPECT_TRUE(allocated_in("format-3", 768 * kKiB));  // copied after the ignored error
}

// QEMU iotest 030 test_read_only: the device's inline file child is explicitly read-only, so
// the reopen cannot make the device writable.
TEST_F(StreamJobTest, ExplicitlyReadOnlyInlineFileDefeatsTheReopen) {
  build_graph();
  std::string ro_top = (dir_ / "ro-top.qcow2").string();
  ASSERT_EQ(run("qemu-img create -q -f qcow2 -b " + image(2) + " -F qcow2 " + ro_top + " 1M"), "");
  json top = {{"driver", "qcow2"},
              {"node-name", "ro-top"},
              {"read-only", true},
              {"file", {{"driver", "file"}, {"filename", ro_top}, {"read-only", true}}},
              {"backing", "format-2"}};
  auto added = run_sync(loop_, engine_->add_node(top));
  ASSERT_TRUE(added.has_value()) << added.error().message();
  auto started = stream(job("job0"), args_of(node("ro-top"), node("format-0")));
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().message(), "Block node is read-only");
  EXPECT_FALSE(has_driver("copy-on-read"));
  EXPECT_FALSE(node("ro-top")->child("backing")->frozen());
  EXPECT_TRUE(node("ro-top")->is_read_only());
  EXPECT_TRUE(events_.empty());
}

// Guest writes through the filter while the stream runs: the final data is the guest's where
// it wrote, the chain's elsewhere.
TEST_F(StreamJobTest, GuestWritesDuringTheStreamWin) {
  build_graph(/*writable=*/true);
  auto started = stream(job("job0"), args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  int done = 0;
  // Parts of the slots the stream copies, written while it runs.
  spawn(write_pattern(guest_.get(), 4 * kKiB, 8 * kKiB, 0x71, &done));
  spawn(write_pattern(guest_.get(), kSlot + 60 * kKiB, 8 * kKiB, 0x72, &done));
  spawn(write_pattern(guest_.get(), 2 * kSlot, 4 * kKiB, 0x73, &done));
  wait_for_event("null");
  for (int i = 0; i < 1000 && done < 3; ++i) {
    loop_.context().restart();
    loop_.context().run_one();
  }
  ASSERT_EQ(done, 3);
  EXPECT_EQ(payloads_.back()["type"], "stream");
  EXPECT_FALSE(payloads_.back().contains("error"));
  EXPECT_EQ(backing_of("format-3"), "");
  std::vector<uint8_t> want = expected_content();
  std::fill_n(want.begin() + 4 * kKiB, 8 * kKiB, 0x71);
  std::fill_n(want.begin() + kSlot + 60 * kKiB, 8 * kKiB, 0x72);
  std::fill_n(want.begin() + 2 * kSlot, 4 * kKiB, 0x73);
  EXPECT_EQ(guest_read(), want);
}

// Several chunks are read at once (the base's reads overlap in time), progress only grows and
// ends at len, and the data is the chain's.
TEST_F(StreamJobTest, SeveralChunksInFlightWithMonotonicProgress) {
  // Three more extents in the base, each its own chunk: four chunks read from format-0.
  for (uint64_t at : {256 * kKiB, 512 * kKiB, 768 * kKiB}) {
    ASSERT_EQ(
        run("qemu-io -f qcow2 -c 'write -q -P 0x55 " + std::to_string(at) + " 64k' " + image(0)),
        "");
  }
  build_graph(false, 0, {{"driver", "slow-read"}});
  g_reads_in_flight = g_max_reads_in_flight = 0;
  auto started = stream(job("job0"), args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  std::vector<uint64_t> progress;
  for (int i = 0; i < 100000 && jobs_->find("job0") != nullptr; ++i) {
    Job* j = jobs_->find("job0");
    progress.push_back(j->progress_current());
    EXPECT_LE(j->progress_current(), j->progress_total());
    loop_.context().restart();
    loop_.context().run_one();
  }
  ASSERT_EQ(jobs_->find("job0"), nullptr);
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_GE(g_max_reads_in_flight, 2);
  EXPECT_LE(g_max_reads_in_flight, 8);
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_EQ(payloads_.back()["offset"], kSize);
  EXPECT_EQ(payloads_.back()["len"], kSize);
  EXPECT_EQ(backing_of("format-3"), "");
  std::vector<uint8_t> want = expected_content();
  for (uint64_t at : {256 * kKiB, 512 * kKiB, 768 * kKiB})
    std::fill_n(want.begin() + at, kSlot, 0x55);
  EXPECT_EQ(guest_read(), want);
}

// A pause stops new chunks: those in flight finish, then nothing is read and progress stands
// still until the job is resumed.
TEST_F(StreamJobTest, PauseStopsNewChunks) {
  for (uint64_t at : {256 * kKiB, 512 * kKiB, 768 * kKiB}) {
    ASSERT_EQ(
        run("qemu-io -f qcow2 -c 'write -q -P 0x55 " + std::to_string(at) + " 64k' " + image(0)),
        "");
  }
  build_graph(false, 0, {{"driver", "slow-read"}});
  g_reads_in_flight = g_max_reads_in_flight = 0;
  auto started = stream(job("job0"), args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  for (int i = 0; i < 1000 && g_reads_in_flight < 2; ++i) {
    loop_.context().restart();
    loop_.context().run_one();
  }
  ASSERT_GE(g_reads_in_flight, 2);
  ASSERT_TRUE(jobs_->pause("job0").has_value());
  wait_for_event("paused");
  for (int i = 0; i < 1000 && g_reads_in_flight > 0; ++i) {
    loop_.context().restart();
    loop_.context().run_one();
  }
  ASSERT_EQ(g_reads_in_flight, 0);
  Job* j = jobs_->find("job0");
  ASSERT_NE(j, nullptr);
  const uint64_t at_pause = j->progress_current();
  const int reads_at_pause = g_reads_started;
  for (int i = 0; i < 200; ++i) {
    loop_.context().restart();
    loop_.context().poll_one();
  }
  EXPECT_EQ(g_reads_started, reads_at_pause);
  EXPECT_EQ(j->progress_current(), at_pause);
  EXPECT_EQ(j->status(), JobStatus::kPaused);
  EXPECT_LT(at_pause, kSize);
  ASSERT_TRUE(jobs_->resume("job0").has_value());
  wait_for_event("null");
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_EQ(payloads_.back()["offset"], kSize);
  EXPECT_EQ(backing_of("format-3"), "");
}

// Every chunk whose read fails goes through the policy: with ignore, one BLOCK_JOB_ERROR per
// failed chunk (not one for all the chunks that were in flight), and the job fails at len.
TEST_F(StreamJobTest, EachFailedChunkGoesThroughThePolicy) {
  for (uint64_t at : {256 * kKiB, 512 * kKiB, 768 * kKiB}) {
    ASSERT_EQ(
        run("qemu-io -f qcow2 -c 'write -q -P 0x55 " + std::to_string(at) + " 64k' " + image(0)),
        "");
  }
  // Every write into the device's storage fails, so every chunk's copy-up does (and block
  // status, which only reads, does not).
  build_graph(false, 3, {{"kind", "write"}, {"errno", "EIO"}, {"count", 0}});
  JobOptions o = job("job0");
  o.on_error = BlockdevOnError::kIgnore;
  auto started = stream(o, args_of(node("format-3"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  // Six chunks: slots 0, 1 and 2 come from three images, one block-status answer each.
  EXPECT_EQ(std::count(events_.begin(), events_.end(), "BLOCK_JOB_ERROR"), 6);
  EXPECT_NE(payloads_.back()["error"].get<std::string>().find("Input/output error"),
            std::string::npos);
  EXPECT_EQ(payloads_.back()["offset"], kSize);
  EXPECT_EQ(backing_of("format-3"), "format-2");
  for (uint64_t at : {uint64_t{0}, kSlot, 2 * kSlot, 256 * kKiB, 512 * kKiB, 768 * kKiB}) {
    EXPECT_FALSE(allocated_in("format-3", at)) << at;
  }
}

// ---- Stream under a writing guest (issue 6) ----
//
// The scheme of mirror_test.cpp's ActiveCommitTest applied to the stream: three 4 MiB images,
// 1 MiB of data in each layer in 64 KiB extents spread over the disk, and zero clusters in the
// upper layers hiding data below them; the top image read-write with a guest attached that
// writes all the time, as an export would. Four writers own disjoint 64 KiB slots (so no two
// writes in flight overlap and a shadow copy knows what the disk must hold); each write is
// recorded in the shadow when it completes, and then the writer reads back part of its slot,
// which must equal the shadow (while the job runs that read goes through the copy-on-read
// filter and may copy up itself, racing the job's copies and the other writers).

constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kDisk = 4 * kMiB;
constexpr uint64_t kStride = 256 * kKiB;  // the extents of a layer repeat every kStride
constexpr int kLayers = 3;
constexpr int kWriters = 4;
constexpr int kTurnsBetweenWrites = 4;

// Layer i's data: pattern 0x10+i at i*64K of every stride (16 extents, 1 MiB). Its zero
// clusters: layer 1 hides layer 0's extent in strides 1, 5 and 9, layer 2 hides layer 1's in
// strides 2, 6 and 10, and adds one where nothing lies below (stride 3, at 192K).
struct Extent {
  int layer;
  uint64_t offset;
  bool zero;
};
std::vector<Extent> layer_extents() {
  std::vector<Extent> out;
  for (int i = 0; i < kLayers; ++i) {
    for (uint64_t j = 0; j < kDisk / kStride; ++j)
      out.push_back({i, j * kStride + i * kSlot, false});
  }
  for (uint64_t j : {1, 5, 9}) out.push_back({1, j * kStride, true});
  for (uint64_t j : {2, 6, 10}) out.push_back({2, j * kStride + kSlot, true});
  out.push_back({2, 3 * kStride + 3 * kSlot, true});
  return out;
}

// What the whole chain reads as.
std::vector<uint8_t> chain_content() {
  std::vector<uint8_t> buf(kDisk, 0);
  for (int i = 0; i < kLayers; ++i) {
    for (const Extent& e : layer_extents()) {
      if (e.layer != i) continue;
      std::fill_n(buf.begin() + static_cast<long>(e.offset), kSlot,
                  e.zero ? uint8_t{0} : static_cast<uint8_t>(0x10 + i));
    }
  }
  return buf;
}

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class StreamUnderWritesTest : public StreamJobTest {
 protected:
  void create_images() override {
    images_ = kLayers;
    for (int i = 0; i < kLayers; ++i) {
      create_image(i, "4M");
      std::string cmd = "qemu-io -f qcow2";
      for (const Extent& e : layer_extents()) {
        if (e.layer != i) continue;
        std::string what = e.zero ? "-z" : "-P " + std::to_string(0x10 + i);
        cmd += " -c 'write -q " + what + " " + std::to_string(e.offset) + " 64k'";
      }
      ASSERT_EQ(run(cmd + " " + image(i)), "");
    }
  }

  // The chain with the guest writing on the top image; the backing images' bytes as they were.
  void build() {
    // The base's reads take a few turns of the loop, as from a disk, so that copies, guest
    // writes and the reads of their copy-on-write overlap in time.
    build_graph(/*writable=*/true, 0, {{"driver", "slow-read"}});
    ASSERT_EQ(guest_->size(), kDisk);
    shadow_ = guest_read();
    ASSERT_EQ(shadow_, chain_content());
    for (int i = 0; i + 1 < kLayers; ++i) backing_bytes_.push_back(file_bytes(image(i)));
    jobs_->add_listener([this](std::string_view name, const json& data) {
      if (name == "JOB_STATUS_CHANGE") writes_at_[data["status"].get<std::string>()] = writes_done_;
    });
  }

  void turn() {
    loop_.context().restart();
    loop_.context().run_one();
  }
  // Runs the loop until the writers have completed `n` more writes.
  void wait_for_writes(int n) {
    int target = writes_done_ + n;
    for (int i = 0; i < 1000000 && writes_done_ < target; ++i) turn();
    ASSERT_GE(writes_done_, target) << "the guest's writes stalled";
  }

  // One writer: writes of 512 B .. 64 KiB inside its own slots, each with a fresh pattern, each
  // followed by a read of part of the same slot.
  Task<void> writer(int k) {
    std::mt19937 rng(1234 + k);
    std::vector<uint8_t> buf(kSlot);
    std::vector<uint8_t> back(kSlot);
    for (;;) {
      // Requests arrive from outside, a few turns of the loop apart: a write that completes at
      // once would otherwise never let the loop run.
      for (int i = 0; i < kTurnsBetweenWrites; ++i) co_await loop_.yield();
      if (stop_) break;
      const uint64_t slot = (rng() % (kDisk / kSlot / kWriters)) * kWriters + k;
      const uint64_t len = (1 + rng() % (kSlot / 512)) * 512;
      const uint64_t offset = slot * kSlot + (rng() % ((kSlot - len) / 512 + 1)) * 512;
      std::fill_n(buf.begin(), len, static_cast<uint8_t>(0x40 + (pattern_++ % 0x80)));
      auto write = guest_->write(offset, len, IoVec(buf.data(), len));
      auto written = co_await write;
      written_[slot] = true;
      if (written) {
        std::copy_n(buf.begin(), len, shadow_.begin() + static_cast<long>(offset));
      } else {
        ++write_errors_;
      }
      ++writes_done_;
      const uint64_t read_len = (1 + rng() % (kSlot / 512)) * 512;
      const uint64_t read_at = slot * kSlot + (rng() % ((kSlot - read_len) / 512 + 1)) * 512;
      auto read = guest_->read(read_at, read_len, IoVec(back.data(), read_len));
      auto got = co_await read;
      if (!got || !std::equal(back.begin(), back.begin() + static_cast<long>(read_len),
                              shadow_.begin() + static_cast<long>(read_at))) {
        ++bad_reads_;
      }
    }
    --writers_running_;
  }
  void start_writers() {
    stop_ = false;
    for (int k = 0; k < kWriters; ++k) {
      ++writers_running_;
      spawn(writer(k));
    }
  }
  void stop_writers() {
    stop_ = true;
    for (int i = 0; i < 1000000 && writers_running_ > 0; ++i) turn();
    ASSERT_EQ(writers_running_, 0);
  }
  void TearDown() override {
    stop_writers();
    StreamJobTest::TearDown();
  }

  // Runs the loop until a guest write is under way on the top image.
  void wait_for_write_in_flight() {
    for (int i = 0; i < 10000 && node("format-2")->writes_in_flight() == 0; ++i) turn();
    ASSERT_GT(node("format-2")->writes_in_flight(), 0u);
  }

  // Writes completed between two status changes of the job.
  int writes_between(const std::string& from, const std::string& to) {
    return writes_at_.count(from) != 0 && writes_at_.count(to) != 0
               ? writes_at_[to] - writes_at_[from]
               : -1;
  }

  // After the engine is gone: every image checks clean, the backing images are byte for byte
  // what they were, and the top image (with the backing file it records, `backing`, "" for
  // none) reads as the shadow.
  void check_images_on_disk(const std::string& backing) {
    close_all();
    for (int i = 0; i < kLayers; ++i) {
      EXPECT_EQ(run("qemu-img check -q " + image(i)), "") << i;
    }
    for (int i = 0; i + 1 < kLayers; ++i) {
      EXPECT_TRUE(file_bytes(image(i)) == backing_bytes_[i]) << "img-" << i << " changed";
    }
    std::string info = run("qemu-img info --output=json " + image(kLayers - 1));
    if (backing.empty()) {
      EXPECT_EQ(info.find("backing-filename"), std::string::npos) << info;
    } else {
      EXPECT_NE(info.find("\"backing-filename\": \"" + backing + "\""), std::string::npos) << info;
    }
    std::string raw = (dir_ / "shadow.raw").string();
    std::ofstream(raw, std::ios::binary)
        .write(reinterpret_cast<const char*>(shadow_.data()), static_cast<long>(shadow_.size()));
    EXPECT_EQ(run("qemu-img compare -q -f raw -F qcow2 " + raw + " " + image(kLayers - 1)), "");
  }

  std::vector<uint8_t> shadow_;
  std::vector<std::vector<char>> backing_bytes_;
  std::vector<bool> written_ = std::vector<bool>(kDisk / kSlot);  // slots the guest wrote
  std::map<std::string, int> writes_at_;  // writes_done_ when the job entered each status
  bool stop_ = false;
  int writers_running_ = 0;
  int writes_done_ = 0;
  int write_errors_ = 0;
  int bad_reads_ = 0;
  unsigned pattern_ = 0;
};

TEST_F(StreamUnderWritesTest, WholeChainWhileTheGuestWrites) {
  build();
  start_writers();
  wait_for_writes(40);  // before the job
  // The filter goes in while a write is under way on the image (a copy must not undo it).
  wait_for_write_in_flight();
  auto started = stream(job("job0"), args_of(node("format-2"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  EXPECT_EQ(guest_->node().driver_class().name, "copy-on-read");
  wait_for_event("null");
  wait_for_writes(100);  // after the job, straight onto the image
  stop_writers();
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "running", "waiting", "pending",
                                               "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_EQ(payloads_.back()["offset"], kDisk);
  EXPECT_EQ(payloads_.back()["len"], kDisk);
  EXPECT_GE(writes_between("running", "concluded"), 40);
  EXPECT_EQ(write_errors_, 0);
  EXPECT_EQ(bad_reads_, 0);
  EXPECT_EQ(backing_of("format-2"), "");
  EXPECT_EQ(&guest_->node(), node("format-2"));
  EXPECT_FALSE(has_driver("copy-on-read"));
  EXPECT_FALSE(node("format-2")->is_read_only());
  EXPECT_EQ(guest_read(), shadow_);
  check_images_on_disk("");
}

TEST_F(StreamUnderWritesTest, ForcedCancelMidwayKeepsTheBackingAndTheGuestWriting) {
  build();
  start_writers();
  wait_for_writes(20);
  JobOptions o = job("job0");
  o.speed = 256 * kKiB;  // a 64 KiB chunk per quarter second: still copying when the cancel comes
  auto started = stream(o, args_of(node("format-2"), nullptr));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_writes(100);
  Job* j = jobs_->find("job0");
  ASSERT_NE(j, nullptr);
  EXPECT_EQ(j->status(), JobStatus::kRunning);
  EXPECT_GT(j->progress_current(), 0u);
  EXPECT_LT(j->progress_current(), kDisk);
  auto cancelled = run_sync(loop_, jobs_->cancel("job0", true));
  ASSERT_TRUE(cancelled.has_value()) << cancelled.error().message();
  wait_for_event("null");
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "running", "aborting",
                                               "BLOCK_JOB_CANCELLED", "concluded", "null"}));
  EXPECT_LT(payloads_.back()["offset"].get<uint64_t>(), kDisk);
  EXPECT_EQ(backing_of("format-2"), "format-1");
  EXPECT_EQ(backing_of("format-1"), "format-0");
  EXPECT_EQ(&guest_->node(), node("format-2"));
  EXPECT_FALSE(has_driver("copy-on-read"));
  EXPECT_FALSE(node("format-2")->child("backing")->frozen());
  EXPECT_FALSE(node("format-1")->child("backing")->frozen());
  wait_for_writes(100);  // after the cancel
  stop_writers();
  EXPECT_EQ(write_errors_, 0);
  EXPECT_EQ(bad_reads_, 0);
  EXPECT_EQ(guest_read(), shadow_);
  check_images_on_disk(image(1));
}

// base-node is the bottom image: only the middle image's data is copied up, and the top ends
// backed by the bottom image.
TEST_F(StreamUnderWritesTest, DownToABaseNodeWhileTheGuestWrites) {
  build();
  start_writers();
  wait_for_writes(40);
  wait_for_write_in_flight();
  auto started = stream(job("job0"), args_of(node("format-2"), node("format-0")));
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  wait_for_writes(100);
  stop_writers();
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_GE(writes_between("running", "concluded"), 20);
  EXPECT_EQ(write_errors_, 0);
  EXPECT_EQ(bad_reads_, 0);
  EXPECT_EQ(backing_of("format-2"), "format-0");
  EXPECT_TRUE(node("format-1")->parents().empty());
  EXPECT_EQ(guest_read(), shadow_);
  // Where the guest did not write, the top holds what the middle image had itself now (its
  // zero clusters too), and base's data stays in base.
  std::vector<int> layer_at(kDisk / kSlot, -1);  // the uppermost layer holding each slot
  for (const Extent& e : layer_extents()) {
    layer_at[e.offset / kSlot] = std::max(layer_at[e.offset / kSlot], e.layer);
  }
  int copied = 0;
  int left = 0;
  for (uint64_t slot = 0; slot < kDisk / kSlot; ++slot) {
    if (written_[slot] || layer_at[slot] == 2) continue;
    EXPECT_EQ(allocated_in("format-2", slot * kSlot), layer_at[slot] == 1) << slot;
    copied += layer_at[slot] == 1;
    left += layer_at[slot] == 0;
  }
  EXPECT_GT(copied, 0);
  EXPECT_GT(left, 0);
  check_images_on_disk(image(0));
}

}  // namespace
}  // namespace strata
