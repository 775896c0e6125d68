// query-qmp-schema: the introspection of what Strata implements, in QEMU's SchemaInfo shape.
//
// The commands and events come from BlockCommands' table, so the schema lists exactly what the
// daemon answers. Type names are given unmasked (QEMU numbers them to stop clients from relying
// on them): Strata's schema is small, its names are QEMU's where the types are QEMU's, and a
// readable schema is worth more to someone debugging a client than the masking is. Clients
// must treat type names as opaque either way. Only the types the commands and events reach are
// listed. The drivers' own options (BlockdevOptions' variants, BlockdevDriver) come from the
// engine's driver registry: each driver declares its options once (DriverClass::options).
#include <cctype>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "block_commands.h"
#include "strata/builtin_drivers.h"
#include "strata/driver.h"

namespace strata::daemon {
namespace {

using qmp::Json;

enum class Meta { kObject, kEnum, kAlternate, kBuiltin };

// A named type. For an object: its members (and, for BlockdevOptions, the union tag and
// variants); for an enum: its values (in `members`' names); for an alternate: its members'
// types; for a builtin: its JSON type (in `json_type`).
struct TypeSpec {
  std::string_view name;
  Meta meta;
  std::span<const SchemaMember> members;
  std::string_view json_type = {};
};

constexpr SchemaMember kVersionTriple[] = {{"major", "int"}, {"minor", "int"}, {"micro", "int"}};
constexpr SchemaMember kVersionInfo[] = {{"qemu", "VersionTriple"}, {"package", "str"}};
constexpr SchemaMember kCommandInfo[] = {{"name", "str"}};
constexpr SchemaMember kSchemaInfo[] = {{"name", "str"}, {"meta-type", "SchemaMetaType"}};
constexpr SchemaMember kSchemaMetaType[] = {{"builtin", ""}, {"enum", ""},      {"array", ""},
                                            {"object", ""},  {"alternate", ""}, {"command", ""},
                                            {"event", ""}};
constexpr SchemaMember kQmpCapability[] = {{"oob", ""}};
constexpr SchemaMember kBlockdevOptions[] = {
    {"driver", "BlockdevDriver"},
    {"node-name", "str", true},
    {"discard", "BlockdevDiscardOptions", true},
    {"cache", "BlockdevCacheOptions", true},
    {"read-only", "bool", true},
    {"auto-read-only", "bool", true},
    {"force-share", "bool", true},
    {"detect-zeroes", "BlockdevDetectZeroesOptions", true},
};
constexpr SchemaMember kBlockdevRef[] = {{"", "BlockdevOptions"}, {"", "str"}};
constexpr SchemaMember kBlockdevRefOrNull[] = {{"", "BlockdevOptions"}, {"", "str"}, {"", "null"}};
constexpr SchemaMember kIntOrStr[] = {{"", "int"}, {"", "str"}};
constexpr SchemaMember kDiscard[] = {{"ignore", ""}, {"unmap", ""}};
constexpr SchemaMember kDetectZeroes[] = {{"off", ""}, {"on", ""}, {"unmap", ""}};
constexpr SchemaMember kCacheOptions[] = {{"direct", "bool", true}, {"no-flush", "bool", true}};
constexpr SchemaMember kBlockDeviceInfo[] = {
    {"file", "str"},
    {"node-name", "str"},
    {"ro", "bool"},
    {"drv", "str"},
    {"backing_file", "str", true},
    {"backing_file_depth", "int"},
    {"encrypted", "bool"},
    {"detect_zeroes", "BlockdevDetectZeroesOptions"},
    {"bps", "int"},
    {"bps_rd", "int"},
    {"bps_wr", "int"},
    {"iops", "int"},
    {"iops_rd", "int"},
    {"iops_wr", "int"},
    {"image", "ImageInfo"},
    {"cache", "BlockdevCacheInfo"},
    {"write_threshold", "int"},
    {"dirty-bitmaps", "[BlockDirtyInfo]", true},
    // Strata's additions (docs/qmp.md).
    {"auto-read-only", "bool"},
    {"x-storage-read-write", "bool"},
};
constexpr SchemaMember kImageInfo[] = {{"filename", "str"},
                                       {"format", "str"},
                                       {"virtual-size", "int"},
                                       {"backing-image", "ImageInfo", true}};
constexpr SchemaMember kDirtyInfo[] = {{"name", "str", true},  {"count", "int"},
                                       {"granularity", "int"}, {"recording", "bool"},
                                       {"busy", "bool"},       {"persistent", "bool"}};
constexpr SchemaMember kCacheInfo[] = {
    {"writeback", "bool"}, {"direct", "bool"}, {"no-flush", "bool"}};
constexpr SchemaMember kBlockInfo[] = {
    {"device", "str"}, {"locked", "bool"}, {"removable", "bool"}};
constexpr SchemaMember kGraph[] = {{"nodes", "[XDbgBlockGraphNode]"},
                                   {"edges", "[XDbgBlockGraphEdge]"}};
constexpr SchemaMember kGraphNode[] = {
    {"id", "int"}, {"type", "XDbgBlockGraphNodeType"}, {"name", "str"}};
constexpr SchemaMember kGraphNodeType[] = {
    {"block-backend", ""}, {"block-job", ""}, {"block-driver", ""}, {"block-export", ""}};
constexpr SchemaMember kGraphEdge[] = {{"parent", "int"},
                                       {"child", "int"},
                                       {"name", "str"},
                                       {"perm", "[BlockPermission]"},
                                       {"shared-perm", "[BlockPermission]"}};
constexpr SchemaMember kBlockPermission[] = {
    {"consistent-read", ""}, {"write", ""}, {"write-unchanged", ""}, {"resize", ""}};

// The job commands' types (qapi/job.json, qapi/block-core.json).
constexpr SchemaMember kJobInfo[] = {{"id", "str"},
                                     {"type", "JobType"},
                                     {"status", "JobStatus"},
                                     {"current-progress", "int"},
                                     {"total-progress", "int"},
                                     {"error", "str", true}};
constexpr SchemaMember kBlockJobInfo[] = {{"type", "str"},
                                          {"device", "str"},
                                          {"len", "int"},
                                          {"offset", "int"},
                                          {"busy", "bool"},
                                          {"paused", "bool"},
                                          {"speed", "int"},
                                          {"io-status", "BlockDeviceIoStatus"},
                                          {"ready", "bool"},
                                          {"status", "JobStatus"},
                                          {"auto-finalize", "bool"},
                                          {"auto-dismiss", "bool"},
                                          {"error", "str", true}};
constexpr SchemaMember kJobStatus[] = {{"undefined", ""}, {"created", ""}, {"running", ""},
                                       {"paused", ""},    {"ready", ""},   {"standby", ""},
                                       {"waiting", ""},   {"pending", ""}, {"aborting", ""},
                                       {"concluded", ""}, {"null", ""}};
constexpr SchemaMember kJobType[] = {
    {"commit", ""},        {"stream", ""},        {"mirror", ""},
    {"backup", ""},        {"create", ""},        {"amend", ""},
    {"snapshot-load", ""}, {"snapshot-save", ""}, {"snapshot-delete", ""}};
constexpr SchemaMember kBlockdevOnError[] = {
    {"report", ""}, {"ignore", ""}, {"enospc", ""}, {"stop", ""}, {"auto", ""}};
constexpr SchemaMember kIoStatus[] = {{"ok", ""}, {"failed", ""}, {"nospace", ""}};
constexpr SchemaMember kIoOperationType[] = {{"read", ""}, {"write", ""}};
constexpr SchemaMember kBlockErrorAction[] = {{"ignore", ""}, {"report", ""}, {"stop", ""}};

constexpr TypeSpec kTypes[] = {
    {"str", Meta::kBuiltin, {}, "string"},
    {"int", Meta::kBuiltin, {}, "int"},
    {"uint64", Meta::kBuiltin, {}, "int"},
    {"size", Meta::kBuiltin, {}, "int"},
    {"bool", Meta::kBuiltin, {}, "boolean"},
    {"null", Meta::kBuiltin, {}, "null"},
    {"q_empty", Meta::kObject, {}},
    {"VersionTriple", Meta::kObject, kVersionTriple},
    {"VersionInfo", Meta::kObject, kVersionInfo},
    {"CommandInfo", Meta::kObject, kCommandInfo},
    {"SchemaInfo", Meta::kObject, kSchemaInfo},
    {"SchemaMetaType", Meta::kEnum, kSchemaMetaType},
    {"QMPCapability", Meta::kEnum, kQmpCapability},
    {"BlockdevOptions", Meta::kObject, kBlockdevOptions},
    {"BlockdevRef", Meta::kAlternate, kBlockdevRef},
    {"BlockdevRefOrNull", Meta::kAlternate, kBlockdevRefOrNull},
    {"IntOrStr", Meta::kAlternate, kIntOrStr},
    {"BlockdevDiscardOptions", Meta::kEnum, kDiscard},
    {"BlockdevDetectZeroesOptions", Meta::kEnum, kDetectZeroes},
    {"BlockdevCacheOptions", Meta::kObject, kCacheOptions},
    {"BlockDeviceInfo", Meta::kObject, kBlockDeviceInfo},
    {"ImageInfo", Meta::kObject, kImageInfo},
    {"BlockdevCacheInfo", Meta::kObject, kCacheInfo},
    {"BlockDirtyInfo", Meta::kObject, kDirtyInfo},
    {"BlockInfo", Meta::kObject, kBlockInfo},
    {"XDbgBlockGraph", Meta::kObject, kGraph},
    {"XDbgBlockGraphNode", Meta::kObject, kGraphNode},
    {"XDbgBlockGraphNodeType", Meta::kEnum, kGraphNodeType},
    {"XDbgBlockGraphEdge", Meta::kObject, kGraphEdge},
    {"BlockPermission", Meta::kEnum, kBlockPermission},
    {"JobInfo", Meta::kObject, kJobInfo},
    {"BlockJobInfo", Meta::kObject, kBlockJobInfo},
    {"JobStatus", Meta::kEnum, kJobStatus},
    {"JobType", Meta::kEnum, kJobType},
    {"BlockdevOnError", Meta::kEnum, kBlockdevOnError},
    {"BlockDeviceIoStatus", Meta::kEnum, kIoStatus},
    {"IoOperationType", Meta::kEnum, kIoOperationType},
    {"BlockErrorAction", Meta::kEnum, kBlockErrorAction},
};

const TypeSpec* find_type(std::string_view name) {
  for (const TypeSpec& type : kTypes) {
    if (type.name == name) return &type;
  }
  return nullptr;
}

// The type holding a driver's own options: QEMU's name where QEMU has the driver
// ("BlockdevOptionsQcow2"), else built the same way from the driver's name.
std::string variant_type(std::string_view driver) {
  if (driver == "null-co") return "BlockdevOptionsNull";  // shared with null-aio in QEMU
  if (driver == "copy-on-read") return "BlockdevOptionsCor";
  std::string name = "BlockdevOptions";
  bool word_start = true;
  for (char c : driver) {
    if (c == '-' || c == '_') {
      word_start = true;
      continue;
    }
    name += word_start ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    word_start = false;
  }
  return name;
}

// The schema type of a declared driver option.
std::string_view option_type_name(const DriverOption& option) {
  switch (option.type) {
    case OptionType::kString:
      return "str";
    case OptionType::kBool:
      return "bool";
    case OptionType::kUint:
      return "uint64";
    case OptionType::kSize:
      return "size";
    case OptionType::kEnum:
      return option.enum_type;
    case OptionType::kIntOrString:
      return "IntOrStr";
    case OptionType::kBlockdevRef:
      return "BlockdevRef";
    case OptionType::kBlockdevRefOrNull:
      return "BlockdevRefOrNull";
  }
  return "str";
}

Json members_json(std::span<const SchemaMember> members) {
  Json list = Json::array();
  for (const SchemaMember& m : members) {
    Json member{{"name", m.name}, {"type", m.type}};
    if (m.optional) member["default"] = nullptr;
    list.push_back(std::move(member));
  }
  return list;
}

// Emits the schema entries, then the types they reach (each once).
class SchemaWriter {
 public:
  explicit SchemaWriter(std::span<const DriverClass* const> drivers) : drivers_(drivers) {}

  void add_object(std::string name, std::span<const SchemaMember> members) {
    for (const SchemaMember& m : members) want(m.type);
    entries_.push_back(
        Json{{"name", name}, {"meta-type", "object"}, {"members", members_json(members)}});
    emitted_.insert(std::move(name));
  }
  void add(Json entry) { entries_.push_back(std::move(entry)); }
  void want(std::string_view type) {
    if (!type.empty()) pending_.emplace_back(type);
  }

  Json finish() {
    while (!pending_.empty()) {
      std::string name = std::move(pending_.back());
      pending_.pop_back();
      if (!emitted_.insert(name).second) continue;
      emit_type(name);
    }
    return std::move(entries_);
  }

 private:
  void emit_type(const std::string& name) {
    if (name.size() > 2 && name.front() == '[') {
      std::string element = name.substr(1, name.size() - 2);
      want(element);
      add(Json{{"name", name}, {"meta-type", "array"}, {"element-type", element}});
      return;
    }
    if (emit_driver_type(name)) return;
    const TypeSpec* type = find_type(name);
    if (type == nullptr) return;  // the schema test finds such a hole
    switch (type->meta) {
      case Meta::kBuiltin:
        add(Json{{"name", name}, {"meta-type", "builtin"}, {"json-type", type->json_type}});
        return;
      case Meta::kEnum: {
        std::vector<std::string_view> values;
        for (const SchemaMember& m : type->members) values.push_back(m.name);
        add_enum(name, values);
        return;
      }
      case Meta::kAlternate: {
        Json members = Json::array();
        for (const SchemaMember& m : type->members) {
          want(m.type);
          members.push_back(Json{{"type", m.type}});
        }
        add(Json{{"name", name}, {"meta-type", "alternate"}, {"members", members}});
        return;
      }
      case Meta::kObject:
        break;
    }
    for (const SchemaMember& m : type->members) want(m.type);
    Json entry{{"name", name}, {"meta-type", "object"}, {"members", members_json(type->members)}};
    if (name == "BlockdevOptions") {
      // One variant per driver that declares its options (every built-in one).
      Json variants = Json::array();
      for (const DriverClass* driver : drivers_) {
        if (!driver->options) continue;
        std::string variant = variant_type(driver->name);
        want(variant);
        variants.push_back(Json{{"case", driver->name}, {"type", variant}});
      }
      entry["tag"] = "driver";
      entry["variants"] = std::move(variants);
    }
    add(std::move(entry));
  }

  void add_enum(const std::string& name, std::span<const std::string_view> values) {
    Json members = Json::array();
    Json names = Json::array();
    for (std::string_view value : values) {
      members.push_back(Json{{"name", value}});
      names.push_back(value);
    }
    add(Json{{"name", name}, {"meta-type", "enum"}, {"members", members}, {"values", names}});
  }

  // The types made from the driver registry: BlockdevDriver, each driver's options and the
  // enums they use. False when `name` is none of them.
  bool emit_driver_type(const std::string& name) {
    if (name == "BlockdevDriver") {
      std::vector<std::string_view> names;
      for (const DriverClass* driver : drivers_) names.push_back(driver->name);
      add_enum(name, names);
      return true;
    }
    for (const DriverClass* driver : drivers_) {
      if (!driver->options) continue;
      if (variant_type(driver->name) == name) {
        add(Json{{"name", name}, {"meta-type", "object"}, {"members", driver_members(*driver)}});
        return true;
      }
      for (const DriverOption& option : *driver->options) {
        if (option.type == OptionType::kEnum && option.enum_type == name) {
          add_enum(name, option.values);
          return true;
        }
      }
    }
    return false;
  }

  Json driver_members(const DriverClass& driver) {
    Json members = Json::array();
    for (const DriverOption& option : *driver.options) {
      std::string_view type = option_type_name(option);
      want(type);
      Json member{{"name", option.name}, {"type", type}};
      if (!option.required) member["default"] = nullptr;
      members.push_back(std::move(member));
    }
    return members;
  }

  std::span<const DriverClass* const> drivers_;
  Json entries_ = Json::array();
  std::vector<std::string> pending_;
  std::set<std::string> emitted_;
};

}  // namespace

namespace {

Json schema_of(std::span<const DriverClass* const> drivers) {
  SchemaWriter schema(drivers);
  for (const CommandSpec& command : BlockCommands::commands()) {
    std::string arg_type(command.arg_type);
    if (arg_type.empty() && command.arguments.empty()) arg_type = "q_empty";
    if (arg_type.empty()) {
      // QEMU's name for a command's implicit argument type.
      arg_type = fmt::format("q_obj_{}-arg", command.name);
      schema.add_object(arg_type, command.arguments);
    }
    std::string ret_type(command.ret_type.empty() ? "q_empty" : command.ret_type);
    schema.want(arg_type);
    schema.want(ret_type);
    schema.add(Json{{"name", command.name},
                    {"meta-type", "command"},
                    {"arg-type", arg_type},
                    {"ret-type", ret_type}});
  }
  for (const EventSpec& event : BlockCommands::events()) {
    std::string arg_type = fmt::format("q_obj_{}-arg", event.name);
    schema.add_object(arg_type, event.data);
    schema.add(Json{{"name", event.name}, {"meta-type", "event"}, {"arg-type", arg_type}});
  }
  return schema.finish();
}

}  // namespace

// The schema of a daemon with the built-in drivers.
Json qmp_schema() { return schema_of(builtin_drivers()); }

Task<Result<Json>> query_qmp_schema(BlockCommands& commands, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  co_return schema_of(commands.engine().drivers());
}

}  // namespace strata::daemon
