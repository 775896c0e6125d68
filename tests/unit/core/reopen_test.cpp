// Reopen (blockdev-reopen and bdrv_reopen_set_read_only), in the style of QEMU's iotests 245
// (reopen semantics) and 187 (read-only reopen seen through a user).
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "strata/options.h"
#include "test_drivers.h"

namespace strata::testing {
namespace {

using json = nlohmann::json;

constexpr Perm R = Perm::kConsistentRead;
constexpr Perm W = Perm::kWrite;
constexpr Perm WU = Perm::kWriteUnchanged;
constexpr Perm RS = Perm::kResize;
constexpr Perm kNone = Perm::kNone;
constexpr Perm kAll = Perm::kAll;

// 245's hd_opts: a format node with an inline file.
json hd_opts(int i) {
  std::string n = std::to_string(i);
  return {{"driver", "test-fmt"},
          {"node-name", "hd" + n},
          {"file", {{"driver", "test-disk"}, {"node-name", "hd" + n + "-file"}}}};
}

// `opts` with `changes` applied; a key "a.b" reaches into the dict under "a", a null value
// removes the key ("drop").
json with(json opts, const json& changes) {
  for (auto it = changes.begin(); it != changes.end(); ++it) {
    json* target = &opts;
    std::string key = it.key();
    for (size_t dot; (dot = key.find('.')) != std::string::npos; key = key.substr(dot + 1)) {
      target = &(*target)[key.substr(0, dot)];
    }
    (*target)[key] = *it;
  }
  return opts;
}

json drop(json opts, const std::string& key) {
  opts.erase(key);
  return opts;
}

class ReopenTest : public CoreTest {
 protected:
  Result<void> reopen(std::vector<json> entries) {
    return run_sync(loop, engine->reopen(std::move(entries)));
  }
  void expect_ok(const json& entry) {
    auto r = reopen({entry});
    EXPECT_TRUE(r.has_value()) << entry.dump() << ": " << r.error().message();
  }
  // Fails with `message` and leaves the whole graph as it was.
  void expect_error(const json& entry, const std::string& message) {
    expect_error_all({entry}, message);
  }
  void expect_error_all(std::vector<json> entries, const std::string& message) {
    std::string before = graph_snapshot();
    auto r = reopen(entries);
    ASSERT_FALSE(r.has_value()) << json(entries).dump();
    EXPECT_EQ(r.error().message(), message) << json(entries).dump();
    EXPECT_EQ(graph_snapshot(), before) << json(entries).dump();
    expect_protocol_kept();
  }
  // Every driver saw each check_perm followed by set or abort, and each reopen_prepare by
  // commit or abort.
  void expect_protocol_kept() {
    for (Node* n : engine->nodes()) {
      auto& d = static_cast<RecordingDriver&>(n->driver());
      EXPECT_TRUE(d.protocol_errors.empty()) << n->name() << ": " << d.protocol_errors[0];
      EXPECT_FALSE(d.check_pending) << n->name();
      EXPECT_FALSE(d.reopen_pending) << n->name();
    }
  }
  Node* node(const std::string& name) { return engine->find_node(name); }
  Perm edge_perm(const std::string& parent, const std::string& child) {
    return node(parent)->child(child)->perm();
  }
};

TEST_F(ReopenTest, SameOptionsOrAChildReferenceChangeNothing) {
  add(hd_opts(0));
  std::string before = graph_snapshot();
  expect_ok(hd_opts(0));
  expect_ok(with(hd_opts(0), {{"file", "hd0-file"}}));
  EXPECT_EQ(graph_snapshot(), before);
  // Every queued node went through prepare and commit, children first.
  EXPECT_EQ(events("reopen-commit"),
            (std::vector<std::string>{"hd0-file", "hd0", "hd0-file", "hd0"}));
  expect_protocol_kept();
}

TEST_F(ReopenTest, EntriesMustNameExistingNodes) {
  add(hd_opts(0));
  expect_error(drop(hd_opts(0), "node-name"), "node-name not specified");
  expect_error(with(hd_opts(0), {{"node-name", "not-found"}}),
               "Failed to find node with node-name='not-found'");
  expect_error(with(hd_opts(0), {{"node-name", nullptr}}),
               "Invalid parameter type for 'node-name', expected: string");
  EXPECT_TRUE(events("reopen-prepare").empty()) << "nothing is prepared for an unknown node";
}

TEST_F(ReopenTest, NodeNameDriverAndDriverOptionsCannotChange) {
  add(with(hd_opts(0), {{"file.size", 65536}}));
  const json opts = with(hd_opts(0), {{"file.size", 65536}});
  expect_error(with(opts, {{"driver", "test-filter"}}), "Cannot change the option 'driver'");
  expect_error(with(opts, {{"driver", "nope"}}), "Parameter 'driver' does not accept value 'nope'");
  expect_error(drop(opts, "driver"), "Parameter 'driver' is missing");
  expect_error(with(opts, {{"file.node-name", "newname"}}), "Cannot change the option 'node-name'");
  expect_error(with(opts, {{"file.driver", "test-fmt"}}), "Cannot change the option 'driver'");
  expect_error(with(opts, {{"file", {{"node-name", "hd0-file"}}}}),
               "Parameter 'file.driver' is missing");
  expect_error(with(opts, {{"file.size", 131072}}), "Cannot change the option 'size'");
  expect_error(with(opts, {{"file.bogus", 1}}), "Cannot change the option 'bogus'");
  expect_error(with(opts, {{"file", nullptr}}),
               "Invalid parameter type for 'file', expected: BlockdevRef");
  expect_error(with(opts, {{"file", "not-found"}}),
               "Cannot find device='' nor node-name='not-found'");
  expect_error(with(opts, {{"read-only", "yes"}}),
               "Invalid parameter type for 'read-only', expected: boolean");
  // The same value is no change, in either syntax.
  expect_ok(opts);
  expect_ok(with(opts, {{"file.size", "65536"}}));
  expect_ok(with(opts, {{"file.size", "64k"}}));
}

TEST_F(ReopenTest, ToggleReadOnlyAndSeePermissionsChange) {
  Node* hd0 = add(hd_opts(0));
  Node* file = node("hd0-file");
  EXPECT_EQ(bits(edge_perm("hd0", "file")), bits(R | W | RS));

  expect_ok(with(hd_opts(0), {{"read-only", true}}));
  EXPECT_TRUE(hd0->is_read_only());
  EXPECT_TRUE(hd0->explicit_options().read_only);
  // The inline file follows its parent.
  EXPECT_TRUE(file->is_read_only());
  EXPECT_FALSE(file->explicit_options().read_only);
  EXPECT_EQ(bits(edge_perm("hd0", "file")), bits(R));
  EXPECT_EQ(bits(driver_of<TestDisk>(file).last_set_perm), bits(R));
  EXPECT_EQ(attach(hd0, R, kAll) != nullptr, true);
  auto writer = engine->attach_backend(*hd0, "", R | W, kAll);
  ASSERT_FALSE(writer.has_value());
  EXPECT_EQ(writer.error().message(), "Block node is read-only");

  // Left out, read-only returns to its default.
  expect_ok(hd_opts(0));
  EXPECT_FALSE(hd0->is_read_only());
  EXPECT_FALSE(file->is_read_only());
  EXPECT_EQ(bits(edge_perm("hd0", "file")), bits(R | W | RS));
  expect_protocol_kept();
}

TEST_F(ReopenTest, CacheDiscardAndDetectZeroesChangeAndGoBack) {
  Node* hd0 = add(hd_opts(0));
  Node* file = node("hd0-file");
  expect_ok(with(hd_opts(0), {{"cache", {{"direct", true}, {"no-flush", true}}}}));
  EXPECT_TRUE(hd0->options().cache_direct && hd0->options().cache_no_flush);
  EXPECT_TRUE(file->options().cache_direct) << "cache.* is inherited";
  expect_ok(hd_opts(0));
  EXPECT_FALSE(hd0->options().cache_direct || hd0->options().cache_no_flush);
  EXPECT_FALSE(file->options().cache_direct);

  expect_ok(with(hd_opts(0), {{"detect-zeroes", "on"}}));
  EXPECT_EQ(hd0->options().detect_zeroes, DetectZeroes::kOn);
  expect_error(with(hd_opts(0), {{"detect-zeroes", "unmap"}}),
               "setting detect-zeroes to unmap is not allowed without setting discard operation "
               "to unmap");
  EXPECT_EQ(hd0->options().detect_zeroes, DetectZeroes::kOn);
  expect_ok(with(hd_opts(0), {{"detect-zeroes", "unmap"}, {"discard", "unmap"}}));
  EXPECT_EQ(hd0->options().detect_zeroes, DetectZeroes::kUnmap);
  EXPECT_EQ(hd0->options().discard, DiscardMode::kUnmap);
  expect_ok(hd_opts(0));
  EXPECT_EQ(hd0->options().detect_zeroes, DetectZeroes::kOff);
  EXPECT_EQ(hd0->options().discard, DiscardMode::kIgnore);
  EXPECT_EQ(file->options().discard, DiscardMode::kUnmap) << "children default to unmap";
}

TEST_F(ReopenTest, ForceShareCannotChange) {
  add(with(hd_opts(0), {{"read-only", true}}));
  add({{"driver", "test-disk"}, {"node-name", "fs"}, {"read-only", true}, {"force-share", true}});
  expect_error(with(hd_opts(0), {{"read-only", true}, {"force-share", true}}),
               "Cannot change the option 'force-share'");
  expect_error(
      {{"driver", "test-disk"}, {"node-name", "fs"}, {"read-only", true}, {"force-share", false}},
      "Cannot change the option 'force-share'");
  // Left out, it stays; a force-share node cannot become writable.
  expect_ok({{"driver", "test-disk"}, {"node-name", "fs"}, {"read-only", true}});
  EXPECT_TRUE(node("fs")->options().force_share);
  expect_error({{"driver", "test-disk"}, {"node-name", "fs"}},
               "force-share=on can only be used with read-only images");
}

TEST_F(ReopenTest, OptionsLeftOutReturnToDefaults) {
  Node* d = add({{"driver", "test-disk"}, {"node-name", "d"}, {"size", 4096}, {"tag", "blue"}});
  EXPECT_EQ(driver_of<TestDisk>(d).tag, "blue");
  // `tag` is mutable: it changes, and left out goes back to its default.
  expect_ok({{"driver", "test-disk"}, {"node-name", "d"}, {"size", 4096}, {"tag", "red"}});
  EXPECT_EQ(driver_of<TestDisk>(d).tag, "red");
  EXPECT_EQ(d->driver_options(), (json{{"size", 4096}, {"tag", "red"}}));
  expect_ok({{"driver", "test-disk"}, {"node-name", "d"}, {"size", 4096}});
  EXPECT_EQ(driver_of<TestDisk>(d).tag, "");
  // `size` is not: left out it cannot be reset, as QEMU's null-co size.
  expect_error({{"driver", "test-disk"}, {"node-name", "d"}},
               "Option 'size' cannot be reset to its default value");
  // A driver that refuses the reopen leaves everything as it was.
  driver_of<TestDisk>(d).fail_reopen = EINVAL;
  expect_error({{"driver", "test-disk"}, {"node-name", "d"}, {"size", 4096}, {"read-only", true}},
               "reopen of 'd' refused");
  EXPECT_FALSE(d->is_read_only());
}

TEST_F(ReopenTest, InlineChildrenFollowTheirParentUnlessSetExplicitly) {
  // hd0's file is inline with its own explicit read-only=off; hd1's file inherits.
  add(with(hd_opts(0), {{"file.read-only", false}}));
  add(hd_opts(1));
  expect_ok(with(hd_opts(1), {{"read-only", true}}));
  EXPECT_TRUE(node("hd1-file")->is_read_only());

  // blockdev-reopen: the dict given now is the child's whole configuration, so an explicit
  // value given at open and left out now is gone; the child inherits again.
  expect_ok(with(hd_opts(0), {{"read-only", true}}));
  EXPECT_TRUE(node("hd0-file")->is_read_only());
  expect_ok(with(hd_opts(0), {{"read-only", true}, {"file.read-only", false}}));
  EXPECT_FALSE(node("hd0-file")->is_read_only());
  EXPECT_TRUE(node("hd0-file")->explicit_options().read_only);

  // set_read_only keeps old options: the explicit read-only=off of the file outranks what it
  // would inherit, and hd1's file (nothing explicit) follows.
  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*node("hd0"), false)).has_value());
  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*node("hd0"), true)).has_value());
  EXPECT_TRUE(node("hd0")->is_read_only());
  EXPECT_FALSE(node("hd0-file")->is_read_only());
  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*node("hd1"), false)).has_value());
  EXPECT_FALSE(node("hd1-file")->is_read_only());

  // A child named by reference keeps its own options and still inherits.
  expect_ok(with(hd_opts(1), {{"read-only", true}, {"file", "hd1-file"}}));
  EXPECT_TRUE(node("hd1-file")->is_read_only());
}

TEST_F(ReopenTest, KeepOldOptionsInKeyvalSyntax) {
  Node* d = add({{"driver", "test-disk"}, {"node-name", "d"}, {"size", 4096}, {"tag", "a"}});
  // strata-io's reopen -o: keyval text, and what is left out keeps its value.
  auto opts = parse_keyval("node-name=d,tag=b,cache.direct=on");
  ASSERT_TRUE(opts.has_value());
  auto r = run_sync(loop, engine->reopen({*opts}, OptionSyntax::kKeyval, true));
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(driver_of<TestDisk>(d).tag, "b");
  EXPECT_TRUE(d->options().cache_direct);
  auto again = parse_keyval("node-name=d,read-only=on");
  ASSERT_TRUE(run_sync(loop, engine->reopen({*again}, OptionSyntax::kKeyval, true)).has_value());
  EXPECT_TRUE(d->options().cache_direct && d->is_read_only());
  EXPECT_EQ(driver_of<TestDisk>(d).tag, "b");
  auto bad = parse_keyval("node-name=d,size=8192");
  auto refused = run_sync(loop, engine->reopen({*bad}, OptionSyntax::kKeyval, true));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "Cannot change the option 'size'");
}

TEST_F(ReopenTest, ReplaceAndDetachBacking) {
  for (int i = 0; i < 3; ++i) add(with(hd_opts(i), {{"backing", nullptr}}));
  Node* hd1 = node("hd1");
  // hd1 <- hd0
  expect_ok(with(hd_opts(0), {{"backing", "hd1"}}));
  ASSERT_NE(node("hd0")->child("backing"), nullptr);
  EXPECT_EQ(&node("hd0")->child("backing")->node(), hd1);
  EXPECT_EQ(node("hd0")->child("backing")->role(), ChildRole::kCow);
  EXPECT_EQ(bits(hd1->cumulative_perm()), bits(kNone));
  auto user = attach(node("hd0"), R, kAll);
  EXPECT_EQ(bits(hd1->cumulative_perm()), bits(R)) << "a reader of hd0 reads its backing";

  // The backing option may not be left out now.
  expect_error(hd_opts(0), "backing is missing for 'hd0'");
  // hd2 <- hd0: the edge moves.
  expect_ok(with(hd_opts(0), {{"backing", "hd2"}}));
  EXPECT_EQ(&node("hd0")->child("backing")->node(), node("hd2"));
  EXPECT_TRUE(hd1->parents().empty());
  EXPECT_EQ(bits(driver_of<TestFormat>(hd1).last_set_perm), bits(kNone));
  EXPECT_EQ(bits(node("hd2")->cumulative_perm()), bits(R));
  // Detach: hd2 is the monitor's and stays.
  expect_ok(with(hd_opts(0), {{"backing", nullptr}}));
  EXPECT_EQ(node("hd0")->child("backing"), nullptr);
  EXPECT_TRUE(node("hd2")->parents().empty());
  expect_ok(hd_opts(0));
  expect_protocol_kept();
}

TEST_F(ReopenTest, NullBackingClosesAnInlineBacking) {
  json opts = with(hd_opts(0), {{"backing", hd_opts(1)}});
  add(opts);
  EXPECT_EQ(node("hd1")->inherits_from(), node("hd0"));
  EXPECT_TRUE(node("hd1")->is_read_only()) << "backing files default to read-only";
  event_log().clear();
  expect_ok(with(opts, {{"backing", nullptr}}));
  EXPECT_EQ(node("hd1"), nullptr);
  EXPECT_EQ(node("hd1-file"), nullptr);
  EXPECT_EQ(events("close"), (std::vector<std::string>{"hd1", "hd1-file"}));
  // With the backing given as a dict again it is a node that does not exist any more.
  expect_error(opts, "Cannot change the option 'backing.driver'");
}

TEST_F(ReopenTest, ReplaceFile) {
  add(hd_opts(0));
  add({{"driver", "test-disk"}, {"node-name", "other"}});
  expect_ok(with(hd_opts(0), {{"file", "other"}}));
  EXPECT_EQ(&node("hd0")->child("file")->node(), node("other"));
  EXPECT_EQ(bits(node("other")->cumulative_perm()), bits(R | W | RS));
  // The old inline file lost its only holder and was closed.
  EXPECT_EQ(node("hd0-file"), nullptr);
  // hd0 now refers to `other`: a dict for it is a change.
  expect_error(hd_opts(0), "Cannot change the option 'file.driver'");
  expect_ok(with(hd_opts(0), {{"file", "other"}}));
}

TEST_F(ReopenTest, CyclesAreRefused) {
  for (int i = 0; i < 3; ++i) add(with(hd_opts(i), {{"backing", nullptr}}));
  expect_ok(with(hd_opts(0), {{"backing", "hd1"}}));
  expect_ok(with(hd_opts(2), {{"backing", "hd0"}}));
  expect_error(with(hd_opts(1), {{"backing", "hd2"}}),
               "Making 'hd2' a backing child of 'hd1' would create a cycle");
  expect_error(with(hd_opts(1), {{"backing", "hd1"}}),
               "Making 'hd1' a backing child of 'hd1' would create a cycle");
  expect_error(with(hd_opts(1), {{"file", "hd0"}}),
               "Making 'hd0' a file child of 'hd1' would create a cycle");
  // A cycle made by two entries together is caught as well.
  expect_error_all(
      {with(hd_opts(1), {{"backing", nullptr}}), with(hd_opts(0), {{"backing", "hd2"}})},
      "Making 'hd2' a backing child of 'hd0' would create a cycle");
}

TEST_F(ReopenTest, FrozenLinksCannotChange) {
  add(with(hd_opts(1), {{"backing", nullptr}}));
  add(with(hd_opts(2), {{"backing", nullptr}}));
  add(with(hd_opts(0), {{"backing", "hd1"}}));
  node("hd0")->child("backing")->set_frozen(true);
  expect_error(with(hd_opts(0), {{"backing", "hd2"}}),
               "Cannot change frozen 'backing' link from 'hd0' to 'hd1'");
  expect_error(with(hd_opts(0), {{"backing", nullptr}}),
               "Cannot change frozen 'backing' link from 'hd0' to 'hd1'");
  // Keeping the same child is fine.
  expect_ok(with(hd_opts(0), {{"backing", "hd1"}, {"read-only", true}}));
  node("hd0")->child("backing")->set_frozen(false);
  expect_ok(with(hd_opts(0), {{"backing", "hd2"}}));
}

TEST_F(ReopenTest, BackingOnlyWhereTheDriverTakesOne) {
  add({{"driver", "test-disk"}, {"node-name", "d"}});
  add({{"driver", "test-disk"}, {"node-name", "e"}});
  add({{"driver", "test-filter"}, {"node-name", "flt"}, {"file", "d"}});
  expect_error({{"driver", "test-disk"}, {"node-name", "e"}, {"backing", "d"}},
               "Driver 'test-disk' of node 'e' does not support backing files");
  expect_error({{"driver", "test-filter"}, {"node-name", "flt"}, {"file", "d"}, {"backing", "e"}},
               "'flt' is a test-filter filter node that does not support a backing child");
  expect_error({{"driver", "test-disk"}, {"node-name", "e"}, {"file", "d"}},
               "Cannot set file child to format node without file child");
  expect_error(with(hd_opts(0), {{"backing", 7}}), "Failed to find node with node-name='hd0'");
  add(hd_opts(0));
  expect_error(with(hd_opts(0), {{"backing", 7}}),
               "Invalid parameter type for 'backing', expected: BlockdevRefOrNull");
}

TEST_F(ReopenTest, AFailingLastEntryLeavesEveryNodeUnchanged) {
  for (int i = 0; i < 3; ++i) add(with(hd_opts(i), {{"backing", nullptr}}));
  auto user = attach(node("hd2"), R | W, R | WU, "sda");
  std::vector<json> entries{
      with(hd_opts(0), {{"read-only", true}, {"backing", "hd1"}, {"detect-zeroes", "on"}}),
      with(hd_opts(1), {{"cache", {{"direct", true}}}, {"file.tag", "x"}}),
      with(hd_opts(2), {{"file.size", 1}}),
  };
  event_log().clear();
  expect_error_all(entries, "Cannot change the option 'size'");
  // Everything before the failure was prepared, and is aborted.
  EXPECT_EQ(events("reopen-prepare"),
            (std::vector<std::string>{"hd0", "hd0-file", "hd1", "hd1-file", "hd2"}));
  EXPECT_EQ(events("reopen-abort"),
            (std::vector<std::string>{"hd2", "hd1-file", "hd1", "hd0-file", "hd0"}));
  EXPECT_TRUE(events("reopen-commit").empty());
  EXPECT_EQ(driver_of<TestDisk>(node("hd1-file")).tag, "");

  // The same, failing in the permission refresh: hd2 cannot go read-only under its writer.
  entries[2] = with(hd_opts(2), {{"read-only", true}});
  event_log().clear();
  expect_error_all(entries, "Read-only block node 'hd2' cannot support read-write users");
  EXPECT_TRUE(events("set").empty());
  auto checked = events("check");
  auto aborted = events("abort");
  std::sort(checked.begin(), checked.end());
  std::sort(aborted.begin(), aborted.end());
  EXPECT_EQ(checked, aborted) << "every driver that prepared its permissions is aborted";
  EXPECT_EQ(events("reopen-abort").size(), 6u);

  // Without the writer it all goes through, as one.
  user.reset();
  ASSERT_TRUE(reopen(entries).has_value());
  EXPECT_TRUE(node("hd0")->is_read_only() && node("hd2")->is_read_only());
  EXPECT_EQ(&node("hd0")->child("backing")->node(), node("hd1"));
  EXPECT_EQ(driver_of<TestDisk>(node("hd1-file")).tag, "x");
  // Commit runs in reverse queue order.
  EXPECT_EQ(events("reopen-commit"),
            (std::vector<std::string>{"hd2-file", "hd2", "hd1-file", "hd1", "hd0-file", "hd0"}));
  expect_protocol_kept();
}

TEST_F(ReopenTest, NewWritersOfANodeMadeReadOnlyAreRefused) {
  Node* d = add({{"driver", "test-disk"}, {"node-name", "d"}});
  auto w = attach(d, R | W, R | WU);
  // Going read-only under a writer fails in QEMU's words; the node stays writable.
  expect_error({{"driver", "test-disk"}, {"node-name", "d"}, {"read-only", true}},
               "Read-only block node 'd' cannot support read-write users");
  EXPECT_FALSE(d->is_read_only());
  w.reset();
  expect_ok({{"driver", "test-disk"}, {"node-name", "d"}, {"read-only", true}});
  auto again = engine->attach_backend(*d, "", R | WU, kAll);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().message(), "Block node is read-only");
}

// iotest 187: qemu-io asks for WRITE before each write and drops it before reopen -r.
TEST_F(ReopenTest, ReadOnlyReopenSeenThroughABlockBackend) {
  Node* d = add({{"driver", "test-disk"}, {"node-name", "d"}});
  auto blk = attach(d, R, kAll);
  std::vector<uint8_t> buf(512, 0xab);
  auto write = [&] {
    return run_sync(loop, blk->write(0, buf.size(), IoVec(buf.data(), buf.size())));
  };
  ASSERT_TRUE(blk->set_perm(R | W, kAll).has_value());
  ASSERT_TRUE(write().has_value());

  // While the user holds WRITE the node cannot go read-only.
  auto busy = run_sync(loop, engine->set_read_only(*d, true));
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().message(), "Read-only block node 'd' cannot support read-write users");
  ASSERT_TRUE(write().has_value());

  ASSERT_TRUE(blk->set_perm(R, kAll).has_value());
  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*d, true)).has_value());
  auto refused = blk->set_perm(R | W, kAll);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "Block node is read-only");
  EXPECT_EQ(refused.error().err(), EPERM);

  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*d, false)).has_value());
  ASSERT_TRUE(blk->set_perm(R | W, kAll).has_value());
  ASSERT_TRUE(write().has_value());
  EXPECT_EQ(driver_of<TestDisk>(d).data[0], 0xab);
}

TEST_F(ReopenTest, ReopenWaitsForRequestsInFlight) {
  Node* d = add({{"driver", "test-disk"}, {"node-name", "d"}});
  auto blk = attach(d, R, kAll);
  auto& disk = driver_of<TestDisk>(d);
  disk.gate_closed = true;
  std::vector<uint8_t> buf(512);
  bool read_done = false;
  auto reader = [](BlockBackend* b, std::vector<uint8_t>* bytes, bool* done) -> Task<void> {
    auto read = b->read(0, bytes->size(), IoVec(bytes->data(), bytes->size()));
    auto r = co_await read;
    EXPECT_TRUE(r.has_value());
    *done = true;
  };
  spawn(reader(blk.get(), &buf, &read_done));
  bool reopened = false;
  auto reopen_task = [](Engine* e, bool* done) -> Task<void> {
    auto task = e->set_read_only(*e->find_node("d"), true);
    auto r = co_await task;
    EXPECT_TRUE(r.has_value());
    *done = true;
  };
  spawn(reopen_task(engine.get(), &reopened));
  loop.poll();
  EXPECT_FALSE(read_done);
  EXPECT_FALSE(reopened) << "the reopen waits for the read to finish";
  EXPECT_FALSE(d->is_read_only());
  disk.open_gate();
  run_until(loop, [&] { return reopened; });
  EXPECT_TRUE(read_done);
  EXPECT_TRUE(d->is_read_only());
}

}  // namespace
}  // namespace strata::testing
