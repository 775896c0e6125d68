// The built-in drivers opened the way users open them: through an Engine, from JSON or keyval.
// The other tests in this directory use a stand-in for the core; these check that the drivers
// and the real core agree on the contract (options left to the driver, the node as `file`), and
// that each driver's declared options (DriverClass::options) are exactly what its open reads.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr Perm kReadWrite = Perm::kConsistentRead | Perm::kWrite;

TEST(DriversThroughEngine, MemoryFromKeyval) {
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  auto opts = parse_keyval("memory,node-name=m0,size=1M", "driver");
  ASSERT_TRUE(opts) << opts.error().message();
  auto node = run_sync(loop, engine.add_node(*opts, OptionSyntax::kKeyval));
  ASSERT_TRUE(node) << node.error().message();
  EXPECT_EQ((*node)->name(), "m0");
  EXPECT_EQ((*node)->size(), uint64_t{1} << 20);

  auto blk = engine.attach_backend(**node, "", kReadWrite, Perm::kAll);
  ASSERT_TRUE(blk) << blk.error().message();
  std::vector<uint8_t> data(4096, 0x3c);
  ASSERT_TRUE(run_sync(loop, (*blk)->write(65536, data.size(), IoVec(data.data(), data.size()))));
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE(run_sync(loop, (*blk)->read(65536, back.size(), IoVec(back.data(), back.size()))));
  EXPECT_EQ(back, data);

  auto hole = run_sync(loop, (*blk)->block_status(0, uint64_t{1} << 20));
  ASSERT_TRUE(hole) << hole.error().message();
  EXPECT_EQ(hole->bytes, 65536u);
  EXPECT_TRUE(has_flag(hole->flags, BlockStatusFlags::kZero));
  EXPECT_FALSE(has_flag(hole->flags, BlockStatusFlags::kData));
  auto written = run_sync(loop, (*blk)->block_status(65536, 65536));
  ASSERT_TRUE(written) << written.error().message();
  EXPECT_TRUE(has_flag(written->flags, BlockStatusFlags::kData));
  EXPECT_EQ(written->file, *node);
}

TEST(DriversThroughEngine, NullCoFromJson) {
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  json opts = {{"driver", "null-co"}, {"node-name", "n0"}, {"read-zeroes", true}};
  auto node = run_sync(loop, engine.add_node(opts));
  ASSERT_TRUE(node) << node.error().message();
  EXPECT_EQ((*node)->size(), uint64_t{1} << 30);

  auto blk = engine.attach_backend(**node, "", Perm::kConsistentRead, Perm::kAll);
  ASSERT_TRUE(blk) << blk.error().message();
  std::vector<uint8_t> buf(512, 0xff);
  ASSERT_TRUE(run_sync(loop, (*blk)->read(0, buf.size(), IoVec(buf.data(), buf.size()))));
  EXPECT_EQ(buf, std::vector<uint8_t>(512, 0));
}

TEST(DriversThroughEngine, OptionErrorsReachTheUser) {
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  auto missing = run_sync(loop, engine.add_node({{"driver", "memory"}}));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "Parameter 'size' is missing");

  auto opts = parse_keyval("null-co,read-zeroes=maybe", "driver");
  ASSERT_TRUE(opts);
  auto bad_bool = run_sync(loop, engine.add_node(*opts, OptionSyntax::kKeyval));
  ASSERT_FALSE(bad_bool);
  EXPECT_EQ(bad_bool.error().message(), "Parameter 'read-zeroes' expects 'on' or 'off'");
  EXPECT_TRUE(engine.nodes().empty());
}

// QEMU checks BlockdevOptions as a whole (QAPI) before it opens anything: an unknown or
// mistyped option anywhere in the tree is reported, not the missing file an open would find.
struct CheckRow {
  const char* options;  // JSON, or keyval when it does not start with '{'
  const char* error;
};

TEST(DriversThroughEngine, OptionTreeIsCheckedBeforeAnythingOpens) {
  const CheckRow rows[] = {
      {R"({"driver":"file","filename":"/nonexistent/x","bogus":1})",
       "Parameter 'bogus' is unexpected"},
      {R"({"driver":"raw","file":{"driver":"file","filename":"/nonexistent/x","bogus":1}})",
       "Parameter 'file.bogus' is unexpected"},
      {R"({"driver":"qcow2","file":{"driver":"file","filename":"/nonexistent/x"},
           "backing":{"driver":"file","filename":"/nonexistent/y","bogus":2}})",
       "Parameter 'backing.bogus' is unexpected"},
      {R"({"driver":"qcow2","file":{"driver":"file","filename":"/nonexistent/x"},
           "data-file":{"driver":"null-co","read-zeroes":"yes"}})",
       "Invalid parameter type for 'data-file.read-zeroes', expected: boolean"},
      {R"({"driver":"raw","file":{"filename":"/nonexistent/x"}})",
       "Parameter 'file.driver' is missing"},
      {R"({"driver":"raw","file":{"driver":"file","filename":"/nonexistent/x"},"backing":null})",
       "Parameter 'backing' is unexpected"},
      {"driver=raw,file.driver=file,file.filename=/nonexistent/x,file.bogus=1",
       "Parameter 'file.bogus' is unexpected"},
      {R"({"driver":"file","filename":"/nonexistent/x","aio":"bogus"})",
       "Parameter 'aio' does not accept value 'bogus'"},
      {R"({"driver":"fault-inject","file":{"driver":"file","filename":"/nonexistent/x","x":1}})",
       "Parameter 'file.x' is unexpected"},
      {R"({"driver":"fault-inject","kind":"sometimes","file":"n0"})",
       "Parameter 'kind' does not accept value 'sometimes'"},
      {"driver=qcow2,file.driver=file,file.filename=/nonexistent/x,l2-cache-size=1k,bogus=1",
       "Parameter 'bogus' is unexpected"},
      // Without such a mistake, the open itself reports.
      {R"({"driver":"fault-inject","errno":5,"file":{"driver":"file","filename":"/nonexistent/x"}})",
       "Could not open '/nonexistent/x': No such file or directory"},
      {R"({"driver":"raw","file":{"driver":"file","filename":"/nonexistent/x"}})",
       "Could not open '/nonexistent/x': No such file or directory"},
  };
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  for (const CheckRow& row : rows) {
    std::string text = row.options;
    bool is_json = text[0] == '{';
    json options;
    if (is_json) {
      options = json::parse(text);
    } else {
      auto parsed = parse_keyval(text, "driver");
      ASSERT_TRUE(parsed) << text;
      options = *parsed;
    }
    OptionSyntax syntax = is_json ? OptionSyntax::kJson : OptionSyntax::kKeyval;
    auto checked = engine.check_options(options, syntax);
    auto added = run_sync(loop, engine.add_node(options, syntax));
    ASSERT_FALSE(added) << text;
    EXPECT_EQ(added.error().message(), row.error) << text;
    if (checked) {
      EXPECT_EQ(std::string(row.error).rfind("Could not open", 0), 0u) << text;
    } else {
      EXPECT_EQ(checked.error().message(), row.error) << text;
    }
  }
  EXPECT_TRUE(engine.nodes().empty());
}

// ---- Each built-in driver's declared options are exactly those its open reads ----

// A small driver that declares no options: it reads `size` itself.
class PlainDriver final : public Driver {
 public:
  uint64_t length() const override { return 4096; }
  Task<Result<void>> preadv(uint64_t, uint64_t, IoVec, ReqFlags) override {
    co_return Result<void>{};
  }
};

Task<Result<std::unique_ptr<Driver>>> open_plain(OpenContext& ctx) {
  auto size = ctx.options().get_size("size");
  if (!size) co_return size.error();
  co_return std::unique_ptr<Driver>(std::make_unique<PlainDriver>());
}

const DriverClass kPlain = {"plain", DriverKind::kProtocol, &open_plain};

TEST(UndeclaredDriverOptions, TheDriverChecksThemItself) {
  std::vector<const DriverClass*> classes(builtin_drivers().begin(), builtin_drivers().end());
  classes.push_back(&kPlain);
  EventLoop loop;
  Engine engine(loop, classes);
  // Nothing is known before open, so the check lets anything through...
  json options = {{"driver", "plain"}, {"size", "big"}, {"bogus", 1}};
  EXPECT_TRUE(engine.check_options(options, OptionSyntax::kJson));
  // ...and the driver's open and the leftover check report, in that order.
  auto bad_size = run_sync(loop, engine.add_node(options));
  ASSERT_FALSE(bad_size);
  EXPECT_EQ(bad_size.error().message(), "Parameter 'size' expects uint64");
  auto leftover = run_sync(loop, engine.add_node({{"driver", "plain"}, {"bogus", 1}}));
  ASSERT_FALSE(leftover);
  EXPECT_EQ(leftover.error().message(), "Parameter 'bogus' is unexpected");
  EXPECT_TRUE(run_sync(loop, engine.add_node({{"driver", "plain"}, {"size", 512}})));
}

// Images the option table opens: a raw file and a qcow2 image, in /dev/shm.
class DriverOptions : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::path("/dev/shm") / ("strata-driver-options-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    raw_ = (dir_ / "disk.raw").string();
    std::ofstream(raw_).close();
    std::filesystem::resize_file(raw_, 1 << 20);
    qcow2_ = (dir_ / "disk.qcow2").string();
    const ImageCreator* creator = find_image_creator("qcow2");
    ASSERT_NE(creator, nullptr);
    ASSERT_TRUE(creator->create(qcow2_, {{"size", "1048576"}}).has_value());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A configuration of `driver` that opens, without any optional option.
  json base(std::string_view driver) const {
    const std::map<std::string_view, json> bases = {
        {"file", {{"driver", "file"}, {"filename", raw_}}},
        {"null-co", {{"driver", "null-co"}}},
        {"memory", {{"driver", "memory"}, {"size", 65536}}},
        {"raw", {{"driver", "raw"}, {"file", {{"driver", "null-co"}}}}},
        {"qcow2", {{"driver", "qcow2"}, {"file", {{"driver", "file"}, {"filename", qcow2_}}}}},
        {"fault-inject", {{"driver", "fault-inject"}, {"file", {{"driver", "null-co"}}}}},
        {"copy-on-read", {{"driver", "copy-on-read"}, {"file", {{"driver", "null-co"}}}}},
    };
    auto it = bases.find(driver);
    return it == bases.end() ? json() : it->second;
  }

  // Opens `options` in a fresh engine: "" on success, else the error's text.
  static std::string open(const json& options) {
    EventLoop loop;
    Engine engine(loop, builtin_drivers());
    auto node = run_sync(loop, engine.add_node(options));
    return node ? std::string() : node.error().message();
  }

  std::filesystem::path dir_;
  std::string raw_;
  std::string qcow2_;
};

// One declared option given a valid value on top of the driver's base configuration. `error`
// is "" when the open succeeds; otherwise the driver's own refusal, which shows it read the
// option (those two need images this test does not make).
struct OptionRow {
  std::string_view driver;
  std::string_view option;
  json value;
  std::string_view error = "";
};

TEST_F(DriverOptions, EachDeclaredOptionIsReadByOpen) {
  const OptionRow rows[] = {
      {"file", "filename", raw_},
      {"file", "aio", "threads"},
      {"file", "locking", "off"},
      {"null-co", "size", 1 << 20},
      {"null-co", "latency-ns", 1},
      {"null-co", "read-zeroes", true},
      {"memory", "size", 1 << 20},
      {"raw", "offset", 512},
      {"raw", "size", 1024},
      {"raw", "file", {{"driver", "memory"}, {"size", 65536}}},
      {"qcow2", "file", {{"driver", "file"}, {"filename", qcow2_}}},
      {"qcow2", "backing", nullptr},
      {"qcow2",
       "data-file",
       {{"driver", "null-co"}},
       "'data-file' can only be set for images with an external data file"},
      {"qcow2", "lazy-refcounts", true},
      {"qcow2", "pass-discard-request", false},
      {"qcow2", "pass-discard-snapshot", false},
      {"qcow2", "pass-discard-other", true},
      {"qcow2", "x-snapshot", "snap",
       "x-snapshot can only be used with read-only images (read-only=on)"},
      {"qcow2", "cache-size", 1 << 20},
      {"qcow2", "l2-cache-size", 65536},
      {"qcow2", "refcount-cache-size", 65536},
      {"qcow2", "cache-clean-interval", 0},
      {"fault-inject", "file", {{"driver", "memory"}, {"size", 65536}}},
      {"fault-inject", "kind", "write"},
      {"fault-inject", "nth", 2},
      {"fault-inject", "errno", "ENOSPC"},
      {"fault-inject", "errno", 28},
      {"fault-inject", "count", 0},
      {"copy-on-read", "file", {{"driver", "memory"}, {"size", 65536}}},
      {"copy-on-read", "bottom", "nowhere", "Bottom node 'nowhere' not found"},
  };
  std::set<std::pair<std::string_view, std::string_view>> tested;
  for (const OptionRow& row : rows) {
    json options = base(row.driver);
    options[std::string(row.option)] = row.value;
    EXPECT_EQ(open(options), row.error) << options.dump();
    tested.emplace(row.driver, row.option);
  }
  // The table covers every declared option of every built-in driver, and nothing else.
  std::set<std::pair<std::string_view, std::string_view>> declared;
  for (const DriverClass* cls : builtin_drivers()) {
    ASSERT_TRUE(cls->options.has_value()) << cls->name << " declares no options";
    ASSERT_FALSE(base(cls->name).is_null()) << cls->name << " has no base configuration here";
    for (const DriverOption& option : *cls->options) declared.emplace(cls->name, option.name);
  }
  EXPECT_EQ(tested, declared);
}

TEST_F(DriverOptions, EveryDeclaredEnumValueIsAccepted) {
  for (const DriverClass* cls : builtin_drivers()) {
    ASSERT_TRUE(cls->options.has_value()) << cls->name;
    for (const DriverOption& option : *cls->options) {
      if (option.type != OptionType::kEnum) continue;
      EXPECT_FALSE(option.values.empty()) << cls->name << "." << option.name;
      EXPECT_FALSE(option.enum_type.empty()) << cls->name << "." << option.name;
      for (std::string_view value : option.values) {
        json options = base(cls->name);
        options[std::string(option.name)] = value;
        // io_uring may be missing here: any refusal but the option's own is fine.
        std::string error = open(options);
        EXPECT_EQ(error.find("does not accept value"), std::string::npos) << options.dump();
        EXPECT_EQ(error.find("unexpected"), std::string::npos) << options.dump();
      }
    }
  }
}

TEST_F(DriverOptions, RequiredOptionsAreRequiredByOpen) {
  for (const DriverClass* cls : builtin_drivers()) {
    ASSERT_TRUE(cls->options.has_value()) << cls->name;
    ASSERT_FALSE(base(cls->name).is_null()) << cls->name;
    for (const DriverOption& option : *cls->options) {
      json options = base(cls->name);
      options.erase(std::string(option.name));
      std::string error = open(options);
      if (option.required) {
        EXPECT_EQ(error, "Parameter '" + std::string(option.name) + "' is missing") << cls->name;
      } else {
        EXPECT_EQ(error, "") << cls->name << " without " << option.name;
      }
    }
  }
}

TEST_F(DriverOptions, AnUndeclaredOptionIsRefusedBeforeAndByOpen) {
  for (const DriverClass* cls : builtin_drivers()) {
    json options = base(cls->name);
    ASSERT_FALSE(options.is_null()) << cls->name;
    options["x-undeclared"] = 1;
    EventLoop loop;
    Engine engine(loop, builtin_drivers());
    // Before anything opens...
    auto checked = engine.check_options(options, OptionSyntax::kJson);
    ASSERT_FALSE(checked) << cls->name;
    EXPECT_EQ(checked.error().message(), "Parameter 'x-undeclared' is unexpected");
    // ...and by the open itself when the check is skipped (internal nodes): the driver does
    // not read it either.
    auto node = run_sync(loop, engine.add_internal_node(*cls, options));
    ASSERT_FALSE(node) << cls->name;
    EXPECT_EQ(node.error().message(), "Parameter 'x-undeclared' is unexpected");
  }
}

}  // namespace
}  // namespace strata
