// Opening nodes: generic options, node names, inheritance, children, and failure cleanup.
#include <gtest/gtest.h>

#include "strata/options.h"
#include "test_drivers.h"

namespace strata::testing {
namespace {

using json = nlohmann::json;
using OpenTest = CoreTest;

TEST_F(OpenTest, DriverIsRequiredAndMustExist) {
  EXPECT_EQ(add_error(json::object()), "Parameter 'driver' is missing");
  EXPECT_EQ(add_error({{"driver", "nope"}}), "Parameter 'driver' does not accept value 'nope'");
  EXPECT_EQ(add_error({{"driver", 7}}), "Invalid parameter type for 'driver', expected: string");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", {{"driver", "nope"}}}}),
            "Parameter 'driver' does not accept value 'nope'");
  EXPECT_TRUE(engine->nodes().empty());
}

struct NameRow {
  std::string name;
  const char* error;  // nullptr: accepted
};

TEST_F(OpenTest, NodeNamesTable) {
  add({{"driver", "test-disk"}, {"node-name", "taken"}});
  const NameRow rows[] = {
      {"a", nullptr},
      {"Disk-1.root_x", nullptr},
      {std::string(31, 'n'), nullptr},
      {std::string(32, 'n'), "Node name too long"},
      {"", "Invalid node-name: ''"},
      {"1disk", "Invalid node-name: '1disk'"},
      {"_x", "Invalid node-name: '_x'"},
      {"a b", "Invalid node-name: 'a b'"},
      {"#block1", "Invalid node-name: '#block1'"},
      {"caf\xc3\xa9", "Invalid node-name: 'caf\xc3\xa9'"},
      {"taken", "Duplicate nodes with node-name='taken'"},
  };
  for (const NameRow& row : rows) {
    auto r = run_sync(loop, engine->add_node({{"driver", "test-disk"}, {"node-name", row.name}}));
    if (row.error == nullptr) {
      EXPECT_TRUE(r.has_value()) << row.name << ": " << r.error().message();
    } else {
      ASSERT_FALSE(r.has_value()) << row.name;
      EXPECT_EQ(r.error().message(), row.error);
    }
  }
}

TEST_F(OpenTest, UnnamedNodesGetHashNames) {
  Node* a = add({{"driver", "test-disk"}});
  Node* b = add({{"driver", "test-fmt"}, {"file", {{"driver", "test-disk"}}}});
  EXPECT_EQ(a->name(), "#block1");
  EXPECT_TRUE(a->auto_named());
  EXPECT_EQ(b->name(), "#block2");
  EXPECT_EQ(b->children()[0]->node().name(), "#block3");
  EXPECT_EQ(engine->find_node("#block3"), &b->children()[0]->node());
}

TEST_F(OpenTest, GenericOptionsFromJson) {
  Node* n = add({{"driver", "test-disk"},
                 {"node-name", "d"},
                 {"read-only", true},
                 {"auto-read-only", true},
                 {"force-share", true},
                 {"cache", {{"direct", true}, {"no-flush", true}}},
                 {"discard", "unmap"},
                 {"detect-zeroes", "unmap"}});
  const NodeOptions& o = n->options();
  EXPECT_EQ(o.driver, "test-disk");
  EXPECT_TRUE(o.read_only && o.auto_read_only && o.force_share && o.cache_direct &&
              o.cache_no_flush);
  EXPECT_EQ(o.discard, DiscardMode::kUnmap);
  EXPECT_EQ(o.detect_zeroes, DetectZeroes::kUnmap);
  const ExplicitOptions& e = n->explicit_options();
  EXPECT_TRUE(e.read_only && e.auto_read_only && e.force_share && e.cache_direct &&
              e.cache_no_flush && e.discard && e.detect_zeroes);
  EXPECT_EQ(n->inherits_from(), nullptr);
}

TEST_F(OpenTest, DefaultsAtTopLevel) {
  Node* n = add({{"driver", "test-disk"}});
  const NodeOptions& o = n->options();
  EXPECT_FALSE(o.read_only || o.auto_read_only || o.force_share || o.cache_direct ||
               o.cache_no_flush);
  EXPECT_EQ(o.discard, DiscardMode::kIgnore);
  EXPECT_EQ(o.detect_zeroes, DetectZeroes::kOff);
  const ExplicitOptions& e = n->explicit_options();
  EXPECT_FALSE(e.read_only || e.auto_read_only || e.force_share || e.cache_direct ||
               e.cache_no_flush || e.discard || e.detect_zeroes);
}

TEST_F(OpenTest, GenericOptionsFromKeyval) {
  auto opts = parse_keyval(
      "driver=test-fmt,node-name=q,read-only=on,cache.direct=on,cache.no-flush=off,"
      "discard=unmap,file.driver=test-disk,file.node-name=f,file.size=1M");
  ASSERT_TRUE(opts.has_value()) << opts.error().message();
  Node* q = add(*opts, OptionSyntax::kKeyval);
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(q->options().read_only);
  EXPECT_TRUE(q->options().cache_direct);
  EXPECT_FALSE(q->options().cache_no_flush);
  EXPECT_TRUE(q->explicit_options().cache_no_flush);
  Node* f = engine->find_node("f");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->size(), 1u << 20);
  EXPECT_TRUE(f->options().read_only);
  EXPECT_EQ(add_error(*parse_keyval("driver=test-disk,read-only=maybe"), OptionSyntax::kKeyval),
            "Parameter 'read-only' expects 'on' or 'off'");
}

struct EnumRow {
  const char* discard;
  const char* error;
  DiscardMode expected;
};

TEST_F(OpenTest, DiscardValuesTable) {
  const EnumRow rows[] = {
      {"ignore", nullptr, DiscardMode::kIgnore},
      {"unmap", nullptr, DiscardMode::kUnmap},
      {"off", nullptr, DiscardMode::kIgnore},
      {"on", nullptr, DiscardMode::kUnmap},
      {"trim", "Parameter 'discard' does not accept value 'trim'", DiscardMode::kIgnore},
  };
  for (const EnumRow& row : rows) {
    auto r = run_sync(loop, engine->add_node({{"driver", "test-disk"}, {"discard", row.discard}}));
    if (row.error == nullptr) {
      ASSERT_TRUE(r.has_value()) << row.discard;
      EXPECT_EQ((*r)->options().discard, row.expected) << row.discard;
    } else {
      ASSERT_FALSE(r.has_value());
      EXPECT_EQ(r.error().message(), row.error);
    }
  }
}

TEST_F(OpenTest, OptionCombinationsRefused) {
  EXPECT_EQ(add_error({{"driver", "test-disk"}, {"force-share", true}}),
            "force-share=on can only be used with read-only images");
  EXPECT_EQ(add_error({{"driver", "test-disk"}, {"detect-zeroes", "unmap"}}),
            "setting detect-zeroes to unmap is not allowed without setting discard operation to "
            "unmap");
  EXPECT_EQ(add_error({{"driver", "test-disk"}, {"detect-zeroes", "sometimes"}}),
            "Parameter 'detect-zeroes' does not accept value 'sometimes'");
  EXPECT_EQ(add_error({{"driver", "test-disk"}, {"cache", true}}),
            "Invalid parameter type for 'cache', expected: object");
  EXPECT_EQ(add_error({{"driver", "test-disk"}, {"cache", {{"writeback", true}}}}),
            "Parameter 'cache.writeback' is unexpected");
  // An inline child inherits force-share but must be read-only itself.
  EXPECT_EQ(add_error({{"driver", "test-fmt"},
                       {"read-only", true},
                       {"force-share", true},
                       {"file", {{"driver", "test-disk"}, {"read-only", false}}}}),
            "force-share=on can only be used with read-only images");
  EXPECT_TRUE(engine->nodes().empty());
}

struct InheritRow {
  const char* what;
  json parent;            // generic options of the parent (test-fmt)
  const char* child_key;  // "file" or "backing"
  json child;             // the inline child's own options
  NodeOptions expected;
};

TEST_F(OpenTest, InheritanceTable) {
  NodeOptions rw_unmap;
  rw_unmap.discard = DiscardMode::kUnmap;
  NodeOptions ro_all = rw_unmap;
  ro_all.read_only = true;
  ro_all.cache_direct = true;
  ro_all.cache_no_flush = true;
  ro_all.force_share = true;
  NodeOptions aro = rw_unmap;
  aro.auto_read_only = true;
  NodeOptions backing_default = rw_unmap;
  backing_default.read_only = true;
  NodeOptions own = rw_unmap;
  own.discard = DiscardMode::kIgnore;
  own.cache_direct = false;

  const json everything = {{"read-only", true},
                           {"cache", {{"direct", true}, {"no-flush", true}}},
                           {"force-share", true},
                           {"detect-zeroes", "on"},
                           {"discard", "ignore"}};
  InheritRow rows[] = {
      {"defaults: children discard unmap", json::object(), "file", json::object(), rw_unmap},
      {"file copies everything but detect-zeroes and discard", everything, "file", json::object(),
       ro_all},
      {"file copies auto-read-only", {{"auto-read-only", true}}, "file", json::object(), aro},
      {"backing defaults to read-only, not auto",
       {{"auto-read-only", true}},
       "backing",
       json::object(),
       backing_default},
      {"explicit values win",
       {{"cache", {{"direct", true}}}},
       "file",
       {{"discard", "ignore"}, {"cache", {{"direct", false}}}},
       own},
      {"backing may be made writable explicitly",
       json::object(),
       "backing",
       {{"read-only", false}},
       rw_unmap},
  };
  int i = 0;
  for (InheritRow& row : rows) {
    std::string suffix = std::to_string(i++);
    json parent = row.parent;
    parent["driver"] = "test-fmt";
    parent["node-name"] = "p" + suffix;
    json child = row.child;
    child["driver"] = "test-disk";
    child["node-name"] = "c" + suffix;
    if (std::string(row.child_key) == "backing") {
      parent["file"] = {{"driver", "test-disk"}, {"read-only", parent.value("read-only", false)}};
    }
    parent[row.child_key] = child;
    Node* p = add(parent);
    ASSERT_NE(p, nullptr) << row.what;
    Node* c = engine->find_node("c" + suffix);
    ASSERT_NE(c, nullptr) << row.what;
    const NodeOptions& o = c->options();
    EXPECT_EQ(o.read_only, row.expected.read_only) << row.what;
    EXPECT_EQ(o.auto_read_only, row.expected.auto_read_only) << row.what;
    EXPECT_EQ(o.cache_direct, row.expected.cache_direct) << row.what;
    EXPECT_EQ(o.cache_no_flush, row.expected.cache_no_flush) << row.what;
    EXPECT_EQ(o.force_share, row.expected.force_share) << row.what;
    EXPECT_EQ(o.discard, row.expected.discard) << row.what;
    EXPECT_EQ(o.detect_zeroes, DetectZeroes::kOff) << row.what;
    EXPECT_EQ(c->inherits_from(), p) << row.what;
  }
}

TEST_F(OpenTest, InheritedValuesAreNotExplicit) {
  add({{"driver", "test-fmt"},
       {"read-only", true},
       {"file", {{"driver", "test-disk"}, {"node-name", "c"}, {"cache", {{"direct", true}}}}}});
  const ExplicitOptions& e = engine->find_node("c")->explicit_options();
  EXPECT_FALSE(e.read_only);
  EXPECT_FALSE(e.discard);
  EXPECT_TRUE(e.cache_direct);
}

TEST_F(OpenTest, ReferencedChildInheritsNothing) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  Node* q0 = add({{"driver", "test-fmt"},
                  {"node-name", "q0"},
                  {"read-only", true},
                  {"cache", {{"direct", true}}},
                  {"file", "f0"}});
  EXPECT_EQ(&q0->children()[0]->node(), f0);
  EXPECT_FALSE(f0->options().read_only);
  EXPECT_FALSE(f0->options().cache_direct);
  EXPECT_EQ(f0->options().discard, DiscardMode::kIgnore);
  EXPECT_EQ(f0->inherits_from(), nullptr);
}

TEST_F(OpenTest, ChildReferenceErrors) {
  add({{"driver", "test-disk"}, {"node-name", "f0"}});
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", "nope"}}),
            "Cannot find device='nope' nor node-name='nope'");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}}), "Parameter 'file' is missing");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", {{"driver", "test-fmt"}}}}),
            "Parameter 'file.file' is missing");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", 42}}),
            "Invalid parameter type for 'file', expected: BlockdevRef");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", nullptr}}),
            "Invalid parameter type for 'file', expected: BlockdevRef");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", {{"driver", "test-fmt"}, {"file", 42}}}}),
            "Invalid parameter type for 'file.file', expected: BlockdevRef");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", "f0"}, {"backing", 42}}),
            "Invalid parameter type for 'backing', expected: BlockdevRefOrNull");
  EXPECT_EQ(engine->nodes().size(), 1u);
}

TEST_F(OpenTest, NullBackingMeansNone) {
  Node* q =
      add({{"driver", "test-fmt"}, {"file", {{"driver", "test-disk"}}}, {"backing", nullptr}});
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->children().size(), 1u);
  EXPECT_EQ(q->child("backing"), nullptr);
  auto kv = parse_keyval("driver=test-fmt,file.driver=test-disk,backing=");
  Node* k = add(*kv, OptionSyntax::kKeyval);
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->child("backing"), nullptr);
}

TEST_F(OpenTest, LeftoverOptionsAreRefusedWithTheirPath) {
  EXPECT_EQ(add_error({{"driver", "test-disk"}, {"bogus", 1}}), "Parameter 'bogus' is unexpected");
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"file", {{"driver", "test-disk"}, {"bogus", 1}}}}),
            "Parameter 'file.bogus' is unexpected");
  EXPECT_TRUE(engine->nodes().empty());
}

TEST_F(OpenTest, FailureAfterChildrenOpenedLeavesNothing) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  auto before = edge_snapshot();
  event_log().clear();
  // Children open (one inline, one referenced), then a leftover option fails the parent.
  EXPECT_EQ(add_error({{"driver", "test-fmt"},
                       {"node-name", "q0"},
                       {"file", {{"driver", "test-disk"}, {"node-name", "inline"}}},
                       {"backing", "f0"},
                       {"bogus", true}}),
            "Parameter 'bogus' is unexpected");
  EXPECT_EQ(engine->nodes(), std::vector<Node*>{f0});
  EXPECT_EQ(edge_snapshot(), before);
  EXPECT_TRUE(f0->parents().empty());
  // The parent's driver had opened, so it is closed, before its inline child.
  EXPECT_EQ(events("close"), (std::vector<std::string>{"q0", "inline"}));
  // The names are free again.
  add({{"driver", "test-disk"}, {"node-name", "inline"}});
  add({{"driver", "test-disk"}, {"node-name", "q0"}});
}

TEST_F(OpenTest, DriverOpenFailureClosesItsChildren) {
  event_log().clear();
  EXPECT_EQ(add_error({{"driver", "test-fmt"},
                       {"node-name", "top"},
                       {"file",
                        {{"driver", "test-fail"},
                         {"node-name", "mid"},
                         {"file", {{"driver", "test-disk"}, {"node-name", "leaf"}}}}}}),
            "test-fail: cannot open");
  EXPECT_TRUE(engine->nodes().empty());
  // "mid" never had a driver; only the leaf's driver was open.
  EXPECT_EQ(events("close"), std::vector<std::string>{"leaf"});
}

TEST_F(OpenTest, PermissionFailureOfAChildLeavesNothing) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}, {"read-only", true}});
  EXPECT_EQ(add_error({{"driver", "test-fmt"},
                       {"node-name", "q0"},
                       {"backing", {{"driver", "test-disk"}, {"node-name", "b"}}},
                       {"file", "f0"}}),
            "Block node is read-only");
  EXPECT_EQ(engine->nodes(), std::vector<Node*>{f0});
}

}  // namespace
}  // namespace strata::testing
