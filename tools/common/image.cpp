#include "image.h"

#include <cerrno>
#include <utility>

#include "strata/block_backend.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata::tools {
namespace {

using nlohmann::json;

std::string on_off(bool b) { return b ? "on" : "off"; }

// Sets `key` in `obj` unless the user's text already did.
void set_default(json& obj, const std::string& key, json value) {
  if (!obj.contains(key)) obj[key] = std::move(value);
}

// Merges `extra` (keyval JSON) into `obj` without overwriting what `obj` has.
void merge_under(json& obj, const json& extra) {
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    auto mine = obj.find(it.key());
    if (mine == obj.end()) {
      obj[it.key()] = it.value();
    } else if (mine->is_object() && it.value().is_object()) {
      merge_under(*mine, it.value());
    }
  }
}

}  // namespace

Result<json> image_options(const ImageSpec& spec,
                           const std::function<bool(std::string_view)>& is_protocol) {
  json opts = json::object();
  if (spec.image_opts && !spec.filename.empty()) {
    auto parsed = parse_keyval(spec.filename);
    if (!parsed) return parsed.error();
    opts = std::move(*parsed);
  }
  merge_under(opts, spec.extra);
  if (!spec.image_opts) {
    // Strata never probes: no format means raw.
    set_default(opts, "driver", spec.format.empty() ? "raw" : spec.format);
  }
  const auto driver = opts.find("driver");
  const bool protocol = driver != opts.end() && driver->is_string() &&
                        is_protocol(driver->get_ref<const std::string&>());
  if (!spec.image_opts) {
    if (protocol) {
      set_default(opts, "filename", spec.filename);
    } else {
      set_default(opts, "file", json::object());
      if (opts["file"].is_object()) set_default(opts["file"], "filename", spec.filename);
    }
  }
  if (auto file = opts.find("file"); file != opts.end() && file->is_object()) {
    set_default(*file, "driver", "file");
  }

  if (spec.force_share) {
    auto fs = opts.find("force-share");
    if (fs != opts.end() && !(fs->is_string() && *fs == "on")) {
      return fail(EINVAL, "-U conflicts with image options");
    }
    opts["force-share"] = "on";
  }
  set_default(opts, "read-only", on_off(spec.read_only));
  set_default(opts, "discard", spec.discard.empty() ? "unmap" : spec.discard);
  if (!opts.contains("cache") || opts["cache"].is_object()) {
    json& cache = opts["cache"];
    if (cache.is_null()) cache = json::object();
    set_default(cache, "direct", on_off(spec.cache.direct));
    set_default(cache, "no-flush", on_off(spec.cache.no_flush));
  }
  if (!spec.aio.empty()) {
    // aio belongs to the file driver: the node itself for "-f file", else its file child when
    // that is given inline.
    if (protocol) {
      set_default(opts, "aio", spec.aio);
    } else if (auto file = opts.find("file"); file != opts.end() && file->is_object()) {
      set_default(*file, "aio", spec.aio);
    }
  }
  return opts;
}

Result<void> check_image_spec(const ImageSpec& spec) {
  auto opts = image_options(spec, [](std::string_view) { return false; });
  if (!opts) return opts.error();
  return {};
}

OpenImage::OpenImage() = default;
OpenImage::OpenImage(OpenImage&&) noexcept = default;
OpenImage& OpenImage::operator=(OpenImage&&) noexcept = default;
OpenImage::~OpenImage() = default;

Result<OpenImage> open_image(EventLoop& loop, Engine& engine, const ImageSpec& spec, Perm perm,
                             Perm shared) {
  auto is_protocol = [&](std::string_view name) {
    const DriverClass* d = engine.find_driver(name);
    return d != nullptr && d->kind == DriverKind::kProtocol;
  };
  auto opts = image_options(spec, is_protocol);
  if (!opts) return opts.error();
  if (auto driver = opts->find("driver"); driver != opts->end() && driver->is_string()) {
    const std::string name = *driver;
    if (engine.find_driver(name) == nullptr) return fail(EINVAL, "Unknown driver '{}'", name);
  }

  auto node = run_sync(loop, engine.add_node(std::move(*opts), OptionSyntax::kKeyval));
  if (!node) return node.error();

  OpenImage image;
  image.node = *node;
  image.node_name = (*node)->name();
  image.writethrough = spec.cache.writethrough;
  auto blk = engine.attach_backend(**node, "", perm, shared);
  if (!blk) {
    Error error = blk.error();
    close_image(loop, engine, image);
    return error;
  }
  image.blk = std::move(*blk);
  return image;
}

void close_image(EventLoop& loop, Engine& engine, OpenImage& image) {
  image.blk.reset();
  if (image.node != nullptr) {
    // Closing cannot fail in a way the user could act on: the node is ours and unused now.
    auto deleted = run_sync(loop, engine.delete_node(image.node_name));
    (void)deleted;
  }
  image.node = nullptr;
  image.node_name.clear();
}

}  // namespace strata::tools
