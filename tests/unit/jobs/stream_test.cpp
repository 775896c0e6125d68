// The stream job over a real chain (stream_fixture.h): events, the data, the device's backing
// link and backing-file string, the device's access before, during and after, cancel, error
// policies, and guest writes racing the stream.
#include "stream_fixture.h"

namespace strata {
namespace {
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

// Three more 64 KiB extents of 0x55 in the base, each in a chunk of its own, so that a stream
// of the whole chain reads four chunks from format-0.
constexpr uint64_t kBaseExtents[] = {256 * kKiB, 512 * kKiB, 768 * kKiB};

void write_base_extents(const std::string& base_image) {
  for (uint64_t at : kBaseExtents) {
    ASSERT_EQ(
        run("qemu-io -f qcow2 -c 'write -q -P 0x55 " + std::to_string(at) + " 64k' " + base_image),
        "");
  }
}

// Several chunks are read at once (the base's reads overlap in time), progress only grows and
// ends at len, and the data is the chain's.
TEST_F(StreamJobTest, SeveralChunksInFlightWithMonotonicProgress) {
  // Three more extents in the base, each its own chunk: four chunks read from format-0.
  ASSERT_NO_FATAL_FAILURE(write_base_extents(image(0)));
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
  for (uint64_t at : kBaseExtents) std::fill_n(want.begin() + at, kSlot, 0x55);
  EXPECT_EQ(guest_read(), want);
}

// A pause stops new chunks: those in flight finish, then nothing is read and progress stands
// still until the job is resumed.
TEST_F(StreamJobTest, PauseStopsNewChunks) {
  ASSERT_NO_FATAL_FAILURE(write_base_extents(image(0)));
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
  ASSERT_NO_FATAL_FAILURE(write_base_extents(image(0)));
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

}  // namespace
}  // namespace strata
