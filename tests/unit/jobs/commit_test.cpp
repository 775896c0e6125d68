// The commit job over a real chain: QEMU iotest 247's graph (file nodes with auto-read-only,
// qcow2 nodes read-only with backing by reference), images made by qemu-img and qemu-io in
// /dev/shm. What a client sees (events, the graph before, during and after, the base's access)
// and what lands on disk (the data, the overlay's backing file, qemu-img check).
#include "commit.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
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
#include "strata/job.h"
#include "strata/node.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kSize = 1024 * kKiB;
constexpr int kImages = 5;

using test_shell::run;

class CommitJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path("/dev/shm") / ("strata-commit-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    // img-N backs img-(N+1); image N holds pattern 0x10+N in its own 64 KiB slot.
    for (int i = 0; i < kImages; ++i) {
      std::string cmd = "qemu-img create -q -f qcow2";
      if (i > 0) cmd += " -b " + image(i - 1) + " -F qcow2";
      ASSERT_EQ(run(cmd + " " + image(i) + " 1M"), "");
      ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -q -P " + std::to_string(0x10 + i) + " " +
                    std::to_string(i * 64 * kKiB) + " 64k' " + image(i)),
                "");
    }
    engine_ = std::make_unique<Engine>(loop_, builtin_drivers());
    jobs_ = std::make_unique<JobManager>(*engine_);
    jobs_->add_listener([this](std::string_view name, json data) {
      if (name == "JOB_STATUS_CHANGE") {
        std::string status = data["status"];
        events_.push_back(status);
        // The base's storage, as each state begins.
        if (Node* f0 = engine_->find_node("file-0")) {
          storage_rw_[status] = f0->driver().storage_read_write();
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

  std::string image(int i) const {
    return (dir_ / ("img-" + std::to_string(i) + ".qcow2")).string();
  }

  // 247's graph; `base_file` overrides file-0's options; `fault` puts a fault-inject filter
  // with these options between format-N and file-N.
  void build_graph(json base_file = {}, int fault_at = -1, json fault = {}) {
    for (int i = 0; i < kImages; ++i) {
      std::string n = std::to_string(i);
      json file = {{"driver", "file"},
                   {"node-name", "file-" + n},
                   {"filename", image(i)},
                   {"auto-read-only", true}};
      if (i == 0 && !base_file.is_null()) file.update(base_file);
      ASSERT_TRUE(run_sync(loop_, engine_->add_node(file)).has_value());
      json format = {{"driver", "qcow2"}, {"node-name", "format-" + n}, {"read-only", true}};
      format["file"] = "file-" + n;
      if (i == fault_at) {
        fault.update({{"driver", "fault-inject"}, {"node-name", "fault"}, {"file", "file-" + n}});
        format["file"] = fault;
      }
      format["backing"] = i == 0 ? json(nullptr) : json("format-" + std::to_string(i - 1));
      auto added = run_sync(loop_, engine_->add_node(format));
      ASSERT_TRUE(added.has_value()) << added.error().message();
    }
    // A guest reading the active layer, as a device would.
    auto guest = engine_->attach_backend(*node("format-4"), "", Perm::kConsistentRead, Perm::kAll);
    ASSERT_TRUE(guest.has_value());
    guest_ = std::move(*guest);
  }

  Node* node(const std::string& name) { return engine_->find_node(name); }
  std::string backing_of(const std::string& name) {
    Child* c = node(name)->child("backing");
    return c != nullptr ? c->node().name() : "";
  }

  Result<Job*> commit(JobOptions options, CommitArgs args) {
    return run_sync(loop_, start_commit_job(*jobs_, *engine_, std::move(options), args));
  }

  void wait_for_event(const std::string& event) {
    for (int i = 0; i < 100000; ++i) {
      if (std::find(events_.begin(), events_.end(), event) != events_.end()) return;
      loop_.context().restart();
      loop_.context().run_one();
    }
    FAIL() << "no " << event;
  }

  // What the guest reads: image N's slot holds 0x10+N if N is still in the chain.
  std::vector<uint8_t> guest_read() {
    std::vector<uint8_t> buf(kSize);
    auto r = run_sync(loop_, guest_->read(0, kSize, IoVec(buf.data(), buf.size())));
    EXPECT_TRUE(r.has_value());
    return buf;
  }
  static std::vector<uint8_t> expected_content() {
    std::vector<uint8_t> buf(kSize, 0);
    for (int i = 0; i < kImages; ++i) {
      std::fill_n(buf.begin() + i * 64 * kKiB, 64 * kKiB, static_cast<uint8_t>(0x10 + i));
    }
    return buf;
  }

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

TEST_F(CommitJobTest, SeedScenario247) {
  build_graph();
  ASSERT_FALSE(node("file-0")->driver().storage_read_write());
  auto started = commit(job("job0"), {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "running", "waiting", "pending",
                                               "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  ASSERT_EQ(payloads_.size(), 1u);
  EXPECT_EQ(payloads_[0], (json{{"type", "commit"},
                                {"device", "job0"},
                                {"len", kSize},
                                {"offset", kSize},
                                {"speed", 0}}));
  // The base was writable exactly while the job ran.
  EXPECT_TRUE(storage_rw_["running"]);
  EXPECT_FALSE(node("file-0")->driver().storage_read_write());
  EXPECT_TRUE(node("format-0")->is_read_only());
  // format-3 now sits on format-0; format-1 and format-2 left the chain but stay (the monitor
  // added them); commit_top is gone.
  EXPECT_EQ(backing_of("format-3"), "format-0");
  EXPECT_TRUE(node("format-2")->parents().empty());
  EXPECT_TRUE(node("format-1")->parents().size() == 1u);  // format-2's backing edge
  for (Node* n : engine_->nodes()) EXPECT_NE(n->driver_class().name, "commit_top");
  EXPECT_EQ(guest_read(), expected_content());
  EXPECT_FALSE(node("file-3")->driver().storage_read_write());
  // On disk: format-3 records the base, every image is clean.
  guest_.reset();
  run_sync(loop_, jobs_->shutdown());
  jobs_.reset();
  engine_.reset();
  EXPECT_NE(run("qemu-img info -U --output=json " + image(3))
                .find("\"backing-filename\": \"" + image(0) + "\""),
            std::string::npos);
  for (int i = 0; i < kImages; ++i) {
    EXPECT_EQ(run("qemu-img check -q " + image(i)), "") << i;
  }
  // The base now holds what images 1 and 2 held.
  EXPECT_EQ(run("qemu-io -r -f qcow2 -c 'read -q -P 0x11 64k 64k' -c 'read -q -P 0x12 128k 64k' " +
                image(0)),
            "");
}

TEST_F(CommitJobTest, BaseWithoutAutoReadOnlyIsRefusedAndNothingChanges) {
  build_graph({{"auto-read-only", false}, {"read-only", true}});
  auto started = commit(job("job0"), {node("format-2"), node("format-0")});
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().message(), "Block node is read-only");
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "null"}));
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_TRUE(node("format-0")->is_read_only());
  EXPECT_EQ(engine_->nodes().size(), size_t{2 * kImages});
  EXPECT_EQ(guest_read(), expected_content());
  // Nothing is frozen: another commit over the same chain is not refused for it.
  for (const char* name : {"format-3", "format-2", "format-1"}) {
    EXPECT_FALSE(node(name)->child("backing")->frozen()) << name;
  }
}

TEST_F(CommitJobTest, CancelPutsTheChainBack) {
  build_graph();
  JobOptions o = job("job0");
  o.speed = 4096;  // one chunk per 100 ms slice at most: slow enough to cancel mid-way
  auto started = commit(o, {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("running");
  EXPECT_EQ(node(backing_of("format-3"))->driver_class().name, "commit_top");
  // While it runs, intermediate nodes refuse consistent reads to newcomers.
  auto reader = engine_->attach_backend(*node("format-1"), "", Perm::kConsistentRead, Perm::kAll);
  ASSERT_FALSE(reader.has_value());
  EXPECT_NE(reader.error().message().find("commit job 'job0'"), std::string::npos)
      << reader.error().message();
  auto cancelled = run_sync(loop_, jobs_->cancel("job0", true));
  ASSERT_TRUE(cancelled.has_value()) << cancelled.error().message();
  wait_for_event("null");
  EXPECT_NE(std::find(events_.begin(), events_.end(), "BLOCK_JOB_CANCELLED"), events_.end());
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_TRUE(node("format-0")->is_read_only());
  EXPECT_FALSE(node("file-0")->driver().storage_read_write());
  for (Node* n : engine_->nodes()) EXPECT_NE(n->driver_class().name, "commit_top");
  EXPECT_EQ(guest_read(), expected_content());
}

TEST_F(CommitJobTest, WriteErrorWithStopPausesAndRetriesAfterResume) {
  // The base's storage fails its first write with ENOSPC.
  build_graph({}, 0, {{"kind", "write"}, {"errno", "ENOSPC"}});
  JobOptions o = job("job0");
  o.on_error = BlockdevOnError::kEnospc;
  auto started = commit(o, {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("BLOCK_JOB_ERROR");
  EXPECT_EQ(payloads_.back(),
            (json{{"device", "job0"}, {"operation", "write"}, {"action", "stop"}}));
  wait_for_event("paused");
  ASSERT_TRUE(jobs_->resume("job0").has_value());
  wait_for_event("null");
  EXPECT_EQ(payloads_.back()["type"], "commit");
  EXPECT_FALSE(payloads_.back().contains("error")) << payloads_.back().dump();
  EXPECT_EQ(backing_of("format-3"), "format-0");
}

TEST_F(CommitJobTest, ReadErrorWithReportFailsTheJobAndRestoresTheGraph) {
  // Top's storage fails its next read once armed, after open has read the header and tables.
  build_graph({}, 2, {{"kind", "discard"}});
  auto armed = run_sync(loop_, engine_->reopen({json{{"node-name", "fault"},
                                                     {"driver", "fault-inject"},
                                                     {"kind", "read"},
                                                     {"errno", "EIO"}}},
                                               OptionSyntax::kJson, true));
  ASSERT_TRUE(armed.has_value()) << armed.error().message();
  auto started = commit(job("job0"), {node("format-2"), node("format-0")});
  ASSERT_TRUE(started.has_value()) << started.error().message();
  wait_for_event("null");
  // QEMU reports the error (action "report") before the job aborts.
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "running", "BLOCK_JOB_ERROR", "aborting",
                                               "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  EXPECT_EQ(payloads_[0], (json{{"device", "job0"}, {"operation", "read"}, {"action", "report"}}));
  std::string error = payloads_.back()["error"];
  EXPECT_NE(error.find("Input/output error"), std::string::npos) << error;
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_TRUE(node("format-0")->is_read_only());
  EXPECT_FALSE(node("file-0")->driver().storage_read_write());
  for (Node* n : engine_->nodes()) EXPECT_NE(n->driver_class().name, "commit_top");
}

TEST_F(CommitJobTest, SetupFailureAfterTheReopenUndoesEverything) {
  build_graph();
  auto args = CommitArgs{node("format-2"), node("format-0")};
  args.filter_node_name = "format-1";  // taken: the filter cannot open, after base was reopened
  auto started = commit(job("job0"), args);
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().message(), "Duplicate nodes with node-name='format-1'");
  EXPECT_EQ(events_, (std::vector<std::string>{"created", "null"}));
  EXPECT_EQ(backing_of("format-3"), "format-2");
  EXPECT_TRUE(node("format-0")->is_read_only());
  EXPECT_FALSE(node("file-0")->driver().storage_read_write());
  EXPECT_EQ(guest_read(), expected_content());
}

}  // namespace
}  // namespace strata
