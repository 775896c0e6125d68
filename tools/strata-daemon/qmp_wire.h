// The QMP wire format (qemu/qemu docs/interop/qmp-spec.rst): splitting a byte stream into JSON
// messages, checking a request's envelope, and printing replies and events the way QEMU does.
//
// QEMU does not frame by lines: its JSON streamer counts braces and brackets, so a request may
// span lines and several may share one. JsonSplitter does the same, and also accepts QEMU's
// single-quoted strings (rewritten to standard JSON before nlohmann parses them).
//
// Limits, QEMU's (qobject/json-streamer.c): a message larger than 64 MiB or nested deeper than
// 1024 levels is answered with an error and skipped up to its end. The size cap bounds the
// memory one client can pin; the nesting cap keeps the parser's recursion bounded.
//
// Thread safety: plain values and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::qmp {

using Json = nlohmann::ordered_json;

inline constexpr size_t kMaxMessageBytes = size_t{64} << 20;
inline constexpr int kMaxNesting = 1024;

// One message cut out of the stream: its text (standard JSON), or the error that made the
// splitter give up on it ("JSON token size limit exceeded").
struct RawMessage {
  std::string text;
  std::optional<std::string> error;
};

class JsonSplitter {
 public:
  explicit JsonSplitter(size_t max_bytes = kMaxMessageBytes) : max_bytes_(max_bytes) {}
  // Consumes `data`; appends every message it completes to `out`.
  void feed(std::string_view data, std::vector<RawMessage>& out);

 private:
  void put(char c);
  void finish(std::vector<RawMessage>& out);
  void fail(std::string error, std::vector<RawMessage>& out);

  // Past this size a message's buffer is reserved up to the cap in one step (put()).
  static constexpr size_t kReserveThreshold = size_t{1} << 20;

  size_t max_bytes_;
  std::string buf_;
  int depth_ = 0;
  char quote_ = 0;         // the quote character while inside a string
  bool escape_ = false;    // the previous character was a backslash inside a string
  bool bare_ = false;      // inside a top-level scalar (number, keyword)
  bool skipping_ = false;  // over a limit: dropping the rest of this message
};

// A request whose envelope is valid.
struct Request {
  std::string command;
  Json arguments = Json::object();
  std::optional<Json> id;
  bool oob = false;  // sent as exec-oob
};

// The reply to send instead of running anything.
struct EnvelopeError {
  std::string desc;
  std::optional<Json> id;
};

// Parses one message and checks its envelope with QEMU's texts ("QMP input must be a JSON
// object", "QMP input lacks member 'execute'", "JSON parse error, ...").
struct Parsed {
  std::optional<Request> request;
  std::optional<EnvelopeError> error;
};
Parsed parse_request(const RawMessage& message);

// Why `text` is not valid JSON, in the shape of QEMU's messages ("JSON parse error, premature
// EOI"). REQUIRES: `text` does not parse.
std::string json_parse_error(const std::string& text);

// Compact JSON as QEMU prints it: ", " and ": " separators, ASCII only, object keys in QDict
// order (tools/common/qemu_json.h) so transcripts match qemu-storage-daemon's byte for byte.
std::string dump(const Json& value);
// The same, pretty-printed as a monitor with pretty=on prints it: QEMU's layout (four-space
// indents, one member per line) with "\r\n" line ends. No final line end.
std::string dump_pretty(const Json& value);

// {"return": value[, "id": id]} and {"error": {"class", "desc"}[, "id": id]}.
Json make_return(Json value, const std::optional<Json>& id);
Json make_error(std::string_view error_class, std::string_view desc, const std::optional<Json>& id);
// {"timestamp": {"seconds", "microseconds"}, "event": name[, "data": data]}, timestamped now.
Json make_event(std::string_view name, const std::optional<Json>& data);

}  // namespace strata::qmp
