// Stream under a writing guest (issue 6). The scheme of mirror_test.cpp's ActiveCommitTest applied
// to the stream: three 4 MiB images, 1 MiB of data in each layer in 64 KiB extents spread over the
// disk, and zero clusters in the upper layers hiding data below them; the top image read-write with
// a guest attached that writes all the time, as an export would. Four writers own disjoint 64 KiB
// slots (so no two writes in flight overlap and a shadow copy knows what the disk must hold); each
// write is recorded in the shadow when it completes, and then the writer reads back part of its
// slot, which must equal the shadow (while the job runs that read goes through the copy-on-read
// filter and may copy up itself, racing the job's copies and the other writers).
#include "stream_fixture.h"

namespace strata {
namespace {

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
