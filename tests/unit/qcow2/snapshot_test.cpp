// The snapshot table: round trips, QEMU's layout, errors.
#include "format/qcow2/snapshot.h"

#include <gtest/gtest.h>

#include "format/qcow2/layout.h"

namespace strata::qcow2 {
namespace {

Snapshot snapshot(std::string id, std::string name) {
  Snapshot s;
  s.l1_table_offset = 0x70000;
  s.l1_size = 2;
  s.id = std::move(id);
  s.name = std::move(name);
  s.date_sec = 1700000000;
  s.date_nsec = 123;
  s.vm_clock_nsec = 456;
  s.vm_state_size = 0;
  s.disk_size = 1 << 20;
  s.icount = ~uint64_t{0};
  return s;
}

// What decode yields for `s` after encode: extra data as written.
Snapshot as_written(Snapshot s, std::vector<uint8_t> tail = {}) {
  s.extra_data.assign(24, 0);
  store_be64(&s.extra_data[0], s.vm_state_size);
  store_be64(&s.extra_data[8], s.disk_size.value_or(0));
  store_be64(&s.extra_data[16], s.icount.value_or(~uint64_t{0}));
  s.extra_data.insert(s.extra_data.end(), tail.begin(), tail.end());
  if (!s.disk_size) s.disk_size = 0;
  if (!s.icount) s.icount = ~uint64_t{0};
  return s;
}

TEST(Qcow2Snapshot, EncodeLayoutIsQemus) {
  std::vector<Snapshot> table = {snapshot("1", "abc"), snapshot("2", "")};
  std::vector<uint8_t> b = encode_snapshot_table(table);
  // Entry 0: 40 + 24 + 1 + 3 = 68 bytes; entry 1 at 72: 40 + 24 + 1.
  ASSERT_EQ(b.size(), 72u + 65);
  EXPECT_EQ(load_be64(&b[0]), 0x70000u);
  EXPECT_EQ(load_be32(&b[8]), 2u);
  EXPECT_EQ(load_be16(&b[12]), 1u);
  EXPECT_EQ(load_be16(&b[14]), 3u);
  EXPECT_EQ(load_be32(&b[36]), 24u);       // extra data size
  EXPECT_EQ(load_be64(&b[48]), 1u << 20);  // disk size
  EXPECT_EQ(load_be64(&b[56]), ~uint64_t{0});
  EXPECT_EQ(std::string(b.begin() + 64, b.begin() + 68), "1abc");
  EXPECT_EQ(b[68], 0);  // padding before entry 1
  EXPECT_EQ(std::string(b.begin() + 72 + 64, b.end()), "2");
}

TEST(Qcow2Snapshot, RoundTrip) {
  std::vector<Snapshot> table = {snapshot("1", "first"), snapshot("22", "second one"),
                                 snapshot("3", "")};
  table[1].vm_state_size = 5ull << 32;  // does not fit the 32-bit field
  table[2].disk_size.reset();
  table[2].icount.reset();
  std::vector<uint8_t> bytes = encode_snapshot_table(table);
  Result<std::vector<Snapshot>> d = decode_snapshot_table(bytes, 3, 3);
  ASSERT_TRUE(d) << d.error().message();
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ((*d)[0], as_written(table[0]));
  EXPECT_EQ((*d)[1], as_written(table[1]));
  EXPECT_EQ((*d)[2], as_written(table[2]));
  EXPECT_EQ(load_be32(&bytes[72 + 32]), 0u);  // entry 1's 32-bit vm_state_size: too small
  EXPECT_EQ(encode_snapshot_table(*d), bytes);
  EXPECT_EQ(snapshot_table_bytes(bytes, 3), bytes.size());
}

// An entry as an older or newer writer leaves it: `extra` bytes of extra data.
std::vector<uint8_t> raw_entry(uint32_t vm_state_32, std::vector<uint8_t> extra, std::string id,
                               std::string name) {
  std::vector<uint8_t> b(40, 0);
  store_be64(&b[0], 0x80000);
  store_be32(&b[8], 1);
  store_be16(&b[12], uint16_t(id.size()));
  store_be16(&b[14], uint16_t(name.size()));
  store_be32(&b[32], vm_state_32);
  store_be32(&b[36], uint32_t(extra.size()));
  b.insert(b.end(), extra.begin(), extra.end());
  b.insert(b.end(), id.begin(), id.end());
  b.insert(b.end(), name.begin(), name.end());
  return b;
}

TEST(Qcow2Snapshot, ShortAndLongExtraData) {
  // No extra data (old v2 writers): 32-bit VM state size, no disk size, no icount.
  std::vector<uint8_t> b = raw_entry(77, {}, "1", "old");
  Result<std::vector<Snapshot>> d = decode_snapshot_table(b, 1, 2);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ((*d)[0].vm_state_size, 77u);
  EXPECT_FALSE((*d)[0].disk_size);
  EXPECT_FALSE((*d)[0].icount);
  EXPECT_EQ((*d)[0].name, "old");
  EXPECT_FALSE(snapshot_entry_incomplete((*d)[0], 2));
  EXPECT_TRUE(snapshot_entry_incomplete((*d)[0], 3));

  // 16 bytes: 64-bit VM state size and disk size.
  std::vector<uint8_t> extra16(16, 0);
  store_be64(&extra16[0], 1ull << 33);
  store_be64(&extra16[8], 4096);
  d = decode_snapshot_table(raw_entry(0, extra16, "2", "mid"), 1, 3);
  ASSERT_TRUE(d);
  EXPECT_EQ((*d)[0].vm_state_size, 1ull << 33);
  EXPECT_EQ((*d)[0].disk_size, 4096u);
  EXPECT_FALSE((*d)[0].icount);
  EXPECT_FALSE(snapshot_entry_incomplete((*d)[0], 3));

  // 40 bytes: unknown extra data is kept and written back.
  std::vector<uint8_t> extra40(40, 0);
  store_be64(&extra40[16], 99);
  extra40[39] = 0xee;
  std::vector<uint8_t> entry = raw_entry(0, extra40, "3", "new");
  d = decode_snapshot_table(entry, 1, 3);
  ASSERT_TRUE(d);
  EXPECT_EQ((*d)[0].icount, 99u);
  EXPECT_EQ((*d)[0].extra_data, extra40);
  EXPECT_EQ(encode_snapshot_table(*d), entry);
}

TEST(Qcow2Snapshot, Errors) {
  std::vector<uint8_t> too_much = raw_entry(0, std::vector<uint8_t>(1025, 0), "1", "x");
  Result<std::vector<Snapshot>> d = decode_snapshot_table(too_much, 1, 3);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().err(), EFBIG);
  EXPECT_EQ(d.error().message(), "Too much extra metadata in snapshot table entry 0");
  EXPECT_EQ(d.error().hint(),
            "You can force-remove this extra metadata with qemu-img check -r all");
  EXPECT_TRUE(decode_snapshot_table(raw_entry(0, std::vector<uint8_t>(1024, 0), "1", "x"), 1, 3));

  std::vector<uint8_t> two = encode_snapshot_table(std::vector{snapshot("1", "a")});
  d = decode_snapshot_table(two, 2, 3);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().err(), EIO);
  EXPECT_EQ(d.error().message(), "Failed to read snapshot table: entry 1 is truncated");
  d = decode_snapshot_table(std::span(two).first(two.size() - 1), 1, 3);
  EXPECT_EQ(d.error().message(), "Failed to read snapshot table: entry 0 is truncated");
}

TEST(Qcow2Snapshot, TableTooBig) {
  // Each entry: 40 + 1024 extra + 65535 id + 65535 name = 132134 bytes; 508 of them pass 64 MiB.
  std::vector<uint8_t> entry(40, 0);
  store_be16(&entry[12], 0xffff);
  store_be16(&entry[14], 0xffff);
  store_be32(&entry[36], 1024);
  // Only the fixed parts are needed to see the size: the check comes before reading the rest.
  std::vector<uint8_t> table;
  uint64_t offset = 0;
  uint32_t count = 0;
  while (offset <= kMaxSnapshotTableBytes) {
    table.resize(offset + 40 + 1024 + 2 * 65535, 0);
    std::copy(entry.begin(), entry.end(), table.begin() + offset);
    offset = (offset + 40 + 1024 + 2 * 65535 + 7) & ~7ull;
    ++count;
  }
  Result<std::vector<Snapshot>> d = decode_snapshot_table(table, count + 3, 3);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().err(), EFBIG);
  EXPECT_EQ(d.error().message(), "Snapshot table is too big");
  EXPECT_EQ(d.error().hint(),
            "You can force-remove all 4 overhanging snapshots with qemu-img check -r all");
}

TEST(Qcow2Snapshot, TableBytesAsksForMore) {
  std::vector<uint8_t> bytes =
      encode_snapshot_table(std::vector{snapshot("1", "aaaa"), snapshot("2", "bbbbbbb")});
  EXPECT_EQ(snapshot_table_bytes({}, 2), 40u);
  // Entry 0's fixed part gives its length; entry 1 starts at 72 (69 rounded up to 8).
  EXPECT_EQ(snapshot_table_bytes(std::span(bytes).first(40), 2), 72u + 40);
  EXPECT_EQ(snapshot_table_bytes(std::span(bytes).first(72 + 39), 2), 72u + 40);
  EXPECT_EQ(snapshot_table_bytes(std::span(bytes).first(72 + 40), 2), 72u + 40 + 24 + 1 + 7);
  EXPECT_EQ(snapshot_table_bytes(bytes, 2), bytes.size());
  EXPECT_EQ(snapshot_table_bytes({}, 0), 0u);
}

}  // namespace
}  // namespace strata::qcow2
