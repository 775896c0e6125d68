#include "qmp_wire.h"

#include <fmt/format.h>
#include <sys/time.h>

#include <algorithm>
#include <utility>

#include "qemu_json.h"

namespace strata::qmp {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A SAX handler that only records why parsing failed; nlohmann hands it the error as a value,
// so nothing is thrown.
class ErrorSax : public nlohmann::json_sax<nlohmann::json> {
 public:
  using number_integer_t = nlohmann::json::number_integer_t;
  using number_unsigned_t = nlohmann::json::number_unsigned_t;
  using number_float_t = nlohmann::json::number_float_t;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string& last_token,
                   const nlohmann::detail::exception& error) override {
    token = last_token;
    at_end = std::string_view(error.what()).find("end of input") != std::string_view::npos;
    return false;
  }
  std::string token;
  bool at_end = false;
};

// Appends `v` compactly (`level` < 0) or pretty-printed as the container at depth `level`.
// Pretty printing is QEMU's: one member per line indented by four spaces, "," at line ends,
// and "\r\n" line ends because QEMU's monitor turns every "\n" it prints into "\r\n".
void append_json(std::string& out, const Json& v, int level) {
  const int inner = level < 0 ? -1 : level + 1;
  auto newline = [&out](int depth) {
    if (depth < 0) return;
    out += "\r\n";
    out.append(4 * static_cast<size_t>(depth), ' ');
  };
  const char* separator = level < 0 ? ", " : ",";
  if (v.is_object()) {
    // QDict order: 512 hash buckets in order, each listing its newest key first.
    std::vector<std::pair<unsigned, size_t>> order;
    std::vector<const std::string*> keys;
    for (auto it = v.begin(); it != v.end(); ++it) {
      order.emplace_back(tools::qdict_bucket(it.key()), keys.size());
      keys.push_back(&it.key());
    }
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    out += '{';
    for (size_t i = 0; i < order.size(); ++i) {
      if (i) out += separator;
      newline(inner);
      const std::string& key = *keys[order[i].second];
      out += Json(key).dump(-1, ' ', true);
      out += ": ";
      append_json(out, v.find(key).value(), inner);
    }
    newline(level);
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out += separator;
      newline(inner);
      append_json(out, v[i], inner);
    }
    newline(level);
    out += ']';
  } else {
    out += v.dump(-1, ' ', true, Json::error_handler_t::replace);
  }
}

}  // namespace

// QEMU's parser says "invalid keyword 'bad'", "premature EOI", ...; nlohmann knows the token it
// stopped at, which carries the same information.
std::string json_parse_error(const std::string& text) {
  ErrorSax sax;
  nlohmann::json::sax_parse(text, &sax, nlohmann::json::input_format_t::json, false);
  if (sax.at_end || sax.token.empty()) return "JSON parse error, premature EOI";
  return fmt::format("JSON parse error, invalid token '{}'", sax.token);
}

void JsonSplitter::put(char c) {
  if (skipping_) return;
  // A large message gets its whole allowance at once, as one mapping that is only touched as
  // it fills: growing by doubling would copy, briefly holding the old and the new buffer,
  // and would overshoot the cap (the last doubling), so a client sending an oversized
  // message could make the daemon touch about twice the cap.
  if (buf_.size() == kReserveThreshold) buf_.reserve(max_bytes_ + 1);
  buf_ += c;
}

void JsonSplitter::finish(std::vector<RawMessage>& out) {
  if (!skipping_) out.push_back({std::move(buf_), std::nullopt});
  buf_.clear();
  skipping_ = false;
  bare_ = false;
}

void JsonSplitter::fail(std::string error, std::vector<RawMessage>& out) {
  out.push_back({{}, std::move(error)});
  buf_.clear();
  buf_.shrink_to_fit();
  skipping_ = true;
}

void JsonSplitter::feed(std::string_view data, std::vector<RawMessage>& out) {
  for (char c : data) {
    if (quote_) {
      if (escape_) {
        escape_ = false;
        // \' is only an escape inside single quotes, where it is a plain quote in JSON.
        if (c == '\'' && quote_ == '\'') {
          if (!skipping_) buf_.pop_back();
          put('\'');
        } else {
          put(c);
        }
      } else if (c == '\\') {
        escape_ = true;
        put(c);
      } else if (c == quote_) {
        quote_ = 0;
        put('"');
      } else if (c == '"') {  // a double quote inside a single-quoted string
        put('\\');
        put('"');
      } else {
        put(c);
      }
      if (!quote_ && depth_ == 0) finish(out);
    } else if (bare_) {
      if (is_space(c) || c == '{' || c == '[' || c == '"' || c == '\'') {
        finish(out);
        if (!is_space(c)) feed(std::string_view(&c, 1), out);
        continue;
      }
      put(c);
    } else if (c == '"' || c == '\'') {
      quote_ = c;
      put('"');
    } else if (c == '{' || c == '[') {
      ++depth_;
      put(c);
      if (depth_ > kMaxNesting && !skipping_) fail("JSON nesting depth limit exceeded", out);
    } else if ((c == '}' || c == ']') && depth_ > 0) {
      --depth_;
      put(c);
      if (depth_ == 0) finish(out);
    } else if (depth_ == 0 && !is_space(c)) {
      bare_ = true;
      put(c);
    } else if (depth_ > 0) {
      put(c);
    }
    if (!skipping_ && buf_.size() > max_bytes_) fail("JSON token size limit exceeded", out);
  }
}

Parsed parse_request(const RawMessage& message) {
  if (message.error) return {std::nullopt, EnvelopeError{*message.error, std::nullopt}};
  Json value = Json::parse(message.text, nullptr, false);
  if (value.is_discarded()) {
    return {std::nullopt, EnvelopeError{json_parse_error(message.text), std::nullopt}};
  }
  if (!value.is_object()) {
    return {std::nullopt, EnvelopeError{"QMP input must be a JSON object", std::nullopt}};
  }
  Request req;
  if (auto id = value.find("id"); id != value.end()) req.id = *id;
  auto error = [&](std::string desc) { return Parsed{std::nullopt, EnvelopeError{desc, req.id}}; };
  bool has_execute = false;
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string& key = it.key();
    if (key == "execute" || key == "exec-oob") {
      if (!it->is_string())
        return error(fmt::format("QMP input member '{}' must be a string", key));
      if (has_execute) return error("QMP input member 'exec-oob' is unexpected");
      has_execute = true;
      req.command = it->get<std::string>();
      req.oob = key == "exec-oob";
    } else if (key == "arguments") {
      if (!it->is_object()) return error("QMP input member 'arguments' must be an object");
      req.arguments = *it;
    } else if (key != "id") {
      return error(fmt::format("QMP input member '{}' is unexpected", key));
    }
  }
  if (!has_execute) return error("QMP input lacks member 'execute'");
  return {std::move(req), std::nullopt};
}

std::string dump(const Json& value) {
  std::string out;
  append_json(out, value, -1);
  return out;
}

std::string dump_pretty(const Json& value) {
  std::string out;
  append_json(out, value, 0);
  return out;
}

Json make_return(Json value, const std::optional<Json>& id) {
  Json reply = Json::object();
  reply["return"] = std::move(value);
  if (id) reply["id"] = *id;
  return reply;
}

Json make_error(std::string_view error_class, std::string_view desc,
                const std::optional<Json>& id) {
  Json reply = Json::object();
  reply["error"] = Json{{"class", error_class}, {"desc", desc}};
  if (id) reply["id"] = *id;
  return reply;
}

Json make_event(std::string_view name, const std::optional<Json>& data) {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  Json event = Json::object();
  event["event"] = name;
  if (data) event["data"] = *data;
  event["timestamp"] = Json{{"seconds", tv.tv_sec}, {"microseconds", tv.tv_usec}};
  return event;
}

}  // namespace strata::qmp
