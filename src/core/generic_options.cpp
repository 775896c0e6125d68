// Generic node options: parsing and the precedence layers (generic_options.h).
#include "generic_options.h"

#include <array>
#include <cerrno>
#include <utility>

namespace strata {
namespace {

constexpr std::array<std::pair<std::string_view, DiscardMode>, 4> kDiscardValues{{
    {"ignore", DiscardMode::kIgnore},
    {"unmap", DiscardMode::kUnmap},
    // QEMU's bdrv_parse_discard_flags takes these aliases too.
    {"off", DiscardMode::kIgnore},
    {"on", DiscardMode::kUnmap},
}};

constexpr std::array<std::pair<std::string_view, DetectZeroes>, 3> kDetectZeroesValues{{
    {"off", DetectZeroes::kOff},
    {"on", DetectZeroes::kOn},
    {"unmap", DetectZeroes::kUnmap},
}};

constexpr std::array<std::string_view, 8> kGenericKeys{
    "driver",      "node-name", "read-only", "auto-read-only",
    "force-share", "cache",     "discard",   "detect-zeroes",
};

// Calls f(value member, explicit member) for every option that has an explicit bit, so the
// layers are written once for all of them.
template <class F>
void for_each_option(F&& f) {
  f(&NodeOptions::read_only, &ExplicitOptions::read_only);
  f(&NodeOptions::auto_read_only, &ExplicitOptions::auto_read_only);
  f(&NodeOptions::cache_direct, &ExplicitOptions::cache_direct);
  f(&NodeOptions::cache_no_flush, &ExplicitOptions::cache_no_flush);
  f(&NodeOptions::force_share, &ExplicitOptions::force_share);
  f(&NodeOptions::discard, &ExplicitOptions::discard);
  f(&NodeOptions::detect_zeroes, &ExplicitOptions::detect_zeroes);
}

// Reads an optional boolean into `out`, noting whether it was given.
Result<void> read_bool(OptionReader& reader, std::string_view key, bool& out, bool& given) {
  auto v = reader.get_bool(key);
  if (!v) return v.error();
  if (*v) {
    out = **v;
    given = true;
  }
  return {};
}

Result<void> read_cache(OptionReader& reader, GenericOptions& g) {
  const nlohmann::json* cache = reader.take("cache");
  if (cache == nullptr) return {};
  std::string name = reader.full_name("cache");
  auto is_object = OptionReader::expect_object(*cache, name);
  if (!is_object) return is_object;
  OptionReader sub(*cache, reader.syntax(), name + ".");
  auto r = read_bool(sub, "direct", g.options.cache_direct, g.given.cache_direct);
  if (!r) return r;
  r = read_bool(sub, "no-flush", g.options.cache_no_flush, g.given.cache_no_flush);
  if (!r) return r;
  return sub.finish();
}

Result<void> read_enums(OptionReader& reader, GenericOptions& g) {
  auto discard = reader.get_enum<DiscardMode>("discard", kDiscardValues);
  if (!discard) return discard.error();
  if (*discard) {
    g.options.discard = **discard;
    g.given.discard = true;
  }
  auto detect = reader.get_enum<DetectZeroes>("detect-zeroes", kDetectZeroesValues);
  if (!detect) return detect.error();
  if (*detect) {
    g.options.detect_zeroes = **detect;
    g.given.detect_zeroes = true;
  }
  return {};
}

}  // namespace

bool is_generic_option(std::string_view key) {
  for (std::string_view k : kGenericKeys) {
    if (k == key) return true;
  }
  return false;
}

Result<GenericOptions> parse_generic(OptionReader& reader) {
  GenericOptions g;
  auto driver = reader.get_string("driver");
  if (!driver) return driver.error();
  g.driver = *driver;
  auto name = reader.get_string("node-name");
  if (!name) return name.error();
  g.node_name = *name;

  auto r = read_bool(reader, "read-only", g.options.read_only, g.given.read_only);
  if (r) r = read_bool(reader, "auto-read-only", g.options.auto_read_only, g.given.auto_read_only);
  if (r) r = read_bool(reader, "force-share", g.options.force_share, g.given.force_share);
  if (r) r = read_cache(reader, g);
  if (r) r = read_enums(reader, g);
  if (!r) return r.error();
  return g;
}

void keep_explicit(GenericOptions& g, const NodeOptions& old, const ExplicitOptions& old_given) {
  for_each_option([&](auto value, bool ExplicitOptions::*given) {
    if (g.given.*given || !(old_given.*given)) return;
    g.options.*value = old.*value;
    g.given.*given = true;
  });
}

void fill_unset(GenericOptions& g, const NodeOptions& old) {
  for_each_option([&](auto value, bool ExplicitOptions::*given) {
    if (!(g.given.*given)) g.options.*value = old.*value;
  });
}

void inherit(GenericOptions& g, const NodeOptions* parent, ChildRole role) {
  if (parent == nullptr) return;
  NodeOptions& o = g.options;
  const NodeOptions& p = *parent;
  if (!g.given.cache_direct) o.cache_direct = p.cache_direct;
  if (!g.given.cache_no_flush) o.cache_no_flush = p.cache_no_flush;
  if (!g.given.force_share) o.force_share = p.force_share;
  if (has_role(role, ChildRole::kCow)) {
    // Backing files are only read; a writer that needs one writable reopens it.
    if (!g.given.read_only) o.read_only = true;
    if (!g.given.auto_read_only) o.auto_read_only = false;
  } else {
    if (!g.given.read_only) o.read_only = p.read_only;
    if (!g.given.auto_read_only) o.auto_read_only = p.auto_read_only;
  }
  // The parent applies its own discard policy; below it discards simply pass through.
  if (!g.given.discard) o.discard = DiscardMode::kUnmap;
}

Result<void> validate_generic(const NodeOptions& o) {
  if (o.force_share && !o.read_only) {
    return fail(EINVAL, "force-share=on can only be used with read-only images");
  }
  if (o.detect_zeroes == DetectZeroes::kUnmap && o.discard != DiscardMode::kUnmap) {
    return fail(EINVAL,
                "setting detect-zeroes to unmap is not allowed without setting discard "
                "operation to unmap");
  }
  return {};
}

}  // namespace strata
