// The generic node options (BlockdevOptions' base) as the core parses them, for opening and for
// reopening a node (private to the core).
//
// Parsing gives the values a user wrote and which ones they wrote. The lower layers come from
// the caller, in QEMU's precedence (bdrv_open_inherit, bdrv_reopen_queue_child), highest first:
//   1. the options given now;
//   2. options given explicitly before (reopen with keep_old_options): keep_explicit();
//   3. what an inline child inherits from its parent's (new) options: inherit();
//   4. the node's previous values (reopen with keep_old_options): fill_unset();
//   5. the defaults NodeOptions holds.
// Because inherit() overwrites every inheritable value not given explicitly, layers 4 and 5 are
// applied first and 2 and 1 mark their values as given, so each layer only fills gaps.
//
// Thread safety: plain functions over values.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "strata/node.h"
#include "strata/options.h"
#include "strata/perm.h"
#include "strata/result.h"

namespace strata {

struct GenericOptions {
  NodeOptions options;  // driver and node_name are left empty; see the fields below
  ExplicitOptions given;
  std::optional<std::string> driver;
  std::optional<std::string> node_name;
};

// True for the keys parse_generic consumes ("driver", "node-name", "read-only", "cache", ...).
bool is_generic_option(std::string_view key);

// Reads the generic options from `reader` on top of the defaults. Type errors use the option
// reader's texts ("Parameter 'read-only' expects 'on' or 'off'").
Result<GenericOptions> parse_generic(OptionReader& reader);

// Layer 2: values that were explicit before and are not given now stay, and stay explicit.
void keep_explicit(GenericOptions& g, const NodeOptions& old, const ExplicitOptions& old_given);
// Layer 4: values not given take `old`'s (they stay not explicit).
void fill_unset(GenericOptions& g, const NodeOptions& old);
// Layer 3 (QEMU's bdrv_inherited_options / bdrv_backing_options): an inline child takes its
// parent's cache.*, force-share, read-only and auto-read-only unless set; a kCow child defaults
// to read-only=on, auto-read-only=off instead; discard defaults to unmap below a parent.
// Never inherited: detect-zeroes, node-name, driver options. `parent` nullptr: top level.
void inherit(GenericOptions& g, const NodeOptions* parent, ChildRole role);

// The combinations QEMU refuses: force-share without read-only, detect-zeroes=unmap without
// discard=unmap.
Result<void> validate_generic(const NodeOptions& o);

}  // namespace strata
