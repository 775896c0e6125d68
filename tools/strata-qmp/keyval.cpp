#include "keyval.h"

#include <cerrno>
#include <cstddef>
#include <map>
#include <optional>
#include <utility>

namespace strata::qmp_client {

namespace {

using nlohmann::json;

bool is_index(std::string_view key) {
  if (key.empty() || key.size() > 9) return false;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
  }
  return key.size() == 1 || key[0] != '0';
}

// Objects whose keys are exactly 0..n-1 become arrays, depth first. `path` names the object in
// errors ("children.").
Result<json> lists_from_indices(json value, const std::string& path) {
  if (!value.is_object() || value.empty()) return value;
  bool all_indices = true;
  for (auto it = value.begin(); it != value.end(); ++it) {
    all_indices = all_indices && is_index(it.key());
  }
  for (auto it = value.begin(); it != value.end(); ++it) {
    auto converted = lists_from_indices(std::move(it.value()), path + it.key() + ".");
    if (!converted) return converted.error();
    it.value() = std::move(*converted);
  }
  if (!all_indices) return value;
  json list = json::array();
  for (size_t i = 0; i < value.size(); ++i) {
    auto found = value.find(std::to_string(i));
    if (found == value.end()) return fail(EINVAL, "Parameter '{}{}' missing", path, i);
    list.push_back(std::move(*found));
  }
  return list;
}

// Puts `val` at the dotted `key` inside `root`.
Result<void> put_dotted(json& root, std::string_view key, json val) {
  json* node = &root;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string part(key.substr(start, dot == std::string_view::npos ? dot : dot - start));
    std::string so_far(key.substr(0, dot));
    if (part.empty()) return fail(EINVAL, "Invalid parameter '{}'", key);
    if (dot == std::string_view::npos) {
      auto existing = node->find(part);
      if (existing != node->end() && existing->is_object()) {
        return fail(EINVAL, "Parameters '{}.*' used inconsistently", so_far);
      }
      (*node)[part] = std::move(val);
      return {};
    }
    auto existing = node->find(part);
    if (existing == node->end()) {
      node = &((*node)[part] = json::object());
    } else if (existing->is_object()) {
      node = &*existing;
    } else {
      return fail(EINVAL, "Parameters '{}.*' used inconsistently", so_far);
    }
    start = dot + 1;
  }
}

}  // namespace

json typed_value(std::string_view text) {
  // json::parse(..., allow_exceptions=false) gives `discarded` instead of throwing.
  json parsed = json::parse(text.begin(), text.end(), nullptr, false);
  if (!parsed.is_discarded() && parsed.is_primitive()) return parsed;
  return json(std::string(text));
}

Result<json> parse_arguments(const std::vector<std::string>& words) {
  if (words.empty()) return json::object();
  if (words.size() == 1 && !words[0].empty() && words[0][0] == '{') {
    json parsed = json::parse(words[0], nullptr, false);
    if (parsed.is_discarded()) return fail(EINVAL, "Arguments are not valid JSON: {}", words[0]);
    if (!parsed.is_object()) return fail(EINVAL, "Arguments must be a JSON object");
    return parsed;
  }
  json args = json::object();
  for (const auto& word : words) {
    size_t eq = word.find('=');
    if (eq == std::string::npos) {
      return fail(EINVAL, "Expected '=' after parameter '{}'", word);
    }
    auto put = put_dotted(args, std::string_view(word).substr(0, eq),
                          typed_value(std::string_view(word).substr(eq + 1)));
    if (!put) return put.error();
  }
  return lists_from_indices(std::move(args), "");
}

Result<std::vector<std::string>> split_words(std::string_view line) {
  std::vector<std::string> words;
  std::optional<std::string> word;  // nullopt between words; "" is a word ('' typed)
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < line.size()) {
        word->push_back(line[++i]);
      } else {
        word->push_back(c);
      }
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (word) words.push_back(std::move(*word));
      word.reset();
    } else {
      if (!word) word.emplace();
      if (c == '\'' || c == '"') {
        quote = c;
      } else if (c == '\\' && i + 1 < line.size()) {
        word->push_back(line[++i]);
      } else {
        word->push_back(c);
      }
    }
  }
  if (quote != 0) return fail(EINVAL, "Unterminated {} quote", quote);
  if (word) words.push_back(std::move(*word));
  return words;
}

Result<json> parse_request_line(std::string_view line) {
  size_t first = line.find_first_not_of(" \t");
  if (first != std::string_view::npos && line[first] == '{') {
    json request = json::parse(line.begin(), line.end(), nullptr, false);
    if (request.is_discarded()) return fail(EINVAL, "Not valid JSON: {}", line.substr(first));
    if (!request.is_object() || (!request.contains("execute") && !request.contains("exec-oob"))) {
      return fail(EINVAL, "A raw JSON request is an object with \"execute\"");
    }
    return request;
  }
  // The command name is the first blank-separated word; a JSON object after it is taken whole,
  // so its blanks and quotes need no shell quoting.
  size_t name_end = line.find_first_of(" \t", first);
  std::string name(
      line.substr(first, name_end == std::string_view::npos ? name_end : name_end - first));
  std::string_view rest =
      name_end == std::string_view::npos ? std::string_view() : line.substr(name_end);
  size_t rest_first = rest.find_first_not_of(" \t");
  std::vector<std::string> words;
  if (rest_first != std::string_view::npos && rest[rest_first] == '{') {
    words.emplace_back(rest.substr(rest_first));
  } else {
    auto split = split_words(rest);
    if (!split) return split.error();
    words = std::move(*split);
  }
  auto args = parse_arguments(words);
  if (!args) return args.error();
  json request = {{"execute", name}};
  if (!args->empty()) request["arguments"] = std::move(*args);
  return request;
}

}  // namespace strata::qmp_client
