#include "getopt.h"

#include <fmt/format.h>

#include <algorithm>

namespace strata::tools {

OptionParser::OptionParser(std::span<const std::string> args, std::string_view short_opts,
                           std::span<const LongOption> long_opts)
    : args_(args), short_opts_(short_opts), long_opts_(long_opts) {
  while (!short_opts_.empty() && (short_opts_.front() == '+' || short_opts_.front() == ':')) {
    if (short_opts_.front() == '+') posix_ = true;
    short_opts_.remove_prefix(1);
  }
}

OptionParser::Step OptionParser::next() {
  if (char_pos_ != 0) return parse_short();
  while (index_ < args_.size()) {
    const std::string& element = args_[index_];
    if (element == "--") {
      // Everything after "--" is an operand.
      for (size_t i = index_ + 1; i < args_.size(); i++) operands_.push_back(args_[i]);
      index_ = args_.size();
      break;
    }
    if (element.size() >= 2 && element[0] == '-') {
      if (element[1] == '-') {
        index_++;
        return parse_long(element, 2);
      }
      char_pos_ = 1;
      return parse_short();
    }
    // An operand ("-" alone is one too).
    operands_.push_back(element);
    index_++;
    if (posix_) {
      for (size_t i = index_; i < args_.size(); i++) operands_.push_back(args_[i]);
      index_ = args_.size();
    }
  }
  return Step{};
}

OptionParser::Step OptionParser::parse_short() {
  const std::string& element = args_[index_];
  const char c = element[char_pos_++];
  const bool last_in_element = char_pos_ >= element.size();
  const size_t spec = c == ':' ? std::string_view::npos : short_opts_.find(c);

  auto finish_element = [&] {
    char_pos_ = 0;
    index_++;
  };

  if (spec == std::string_view::npos) {
    if (last_in_element) finish_element();
    Step step{Status::kError, {}, OptionError{OptionError::Kind::kUnknownShort, c, {}, element}};
    return step;
  }
  const bool takes_arg = spec + 1 < short_opts_.size() && short_opts_[spec + 1] == ':';
  Step step{Status::kOption, ParsedOption{c, {}, element}, std::nullopt};
  if (!takes_arg) {
    if (last_in_element) finish_element();
    return step;
  }
  if (!last_in_element) {
    // "-c10": the rest of the element is the argument.
    step.option.arg = element.substr(char_pos_);
    finish_element();
    return step;
  }
  finish_element();
  if (index_ >= args_.size()) {
    return Step{
        Status::kError, {}, OptionError{OptionError::Kind::kMissingShortArg, c, {}, element}};
  }
  step.option.arg = args_[index_++];
  return step;
}

OptionParser::Step OptionParser::parse_long(const std::string& element, size_t start) {
  std::string_view body = std::string_view(element).substr(start);
  const size_t eq = body.find('=');
  const std::string_view name = body.substr(0, eq);
  auto error = [&](OptionError::Kind kind, std::string long_name) {
    return Step{Status::kError, {}, OptionError{kind, 0, std::move(long_name), element}};
  };

  // An exact match wins; otherwise a prefix must pick out one option (glibc also accepts
  // several prefix matches that all mean the same thing).
  const LongOption* found = nullptr;
  std::vector<const LongOption*> prefix_matches;
  for (const LongOption& opt : long_opts_) {
    if (opt.name == name) {
      found = &opt;
      break;
    }
    if (!name.empty() && opt.name.substr(0, name.size()) == name) prefix_matches.push_back(&opt);
  }
  if (found == nullptr && !prefix_matches.empty()) {
    const LongOption* first = prefix_matches.front();
    const bool all_same = std::all_of(
        prefix_matches.begin(), prefix_matches.end(),
        [&](const LongOption* o) { return o->has_arg == first->has_arg && o->id == first->id; });
    if (!all_same) {
      Step step = error(OptionError::Kind::kAmbiguousLong, std::string(body));
      for (const LongOption* o : prefix_matches) step.error->candidates.emplace_back(o->name);
      return step;
    }
    found = first;
  }
  if (found == nullptr) return error(OptionError::Kind::kUnknownLong, std::string(body));

  Step step{Status::kOption, ParsedOption{found->id, {}, element}, std::nullopt};
  if (eq != std::string_view::npos) {
    if (!found->has_arg) {
      return error(OptionError::Kind::kUnexpectedLongArg, std::string(found->name));
    }
    step.option.arg = std::string(body.substr(eq + 1));
    return step;
  }
  if (found->has_arg) {
    if (index_ >= args_.size()) {
      return error(OptionError::Kind::kMissingLongArg, std::string(found->name));
    }
    step.option.arg = args_[index_++];
  }
  return step;
}

std::string getopt_message(std::string_view prog, const OptionError& error) {
  using Kind = OptionError::Kind;
  switch (error.kind) {
    case Kind::kUnknownShort:
      return fmt::format("{}: invalid option -- '{}'", prog, error.short_opt);
    case Kind::kMissingShortArg:
      return fmt::format("{}: option requires an argument -- '{}'", prog, error.short_opt);
    case Kind::kUnknownLong:
      return fmt::format("{}: unrecognized option '--{}'", prog, error.long_name);
    case Kind::kMissingLongArg:
      return fmt::format("{}: option '--{}' requires an argument", prog, error.long_name);
    case Kind::kUnexpectedLongArg:
      return fmt::format("{}: option '--{}' doesn't allow an argument", prog, error.long_name);
    case Kind::kAmbiguousLong: {
      std::string text =
          fmt::format("{}: option '--{}' is ambiguous; possibilities:", prog, error.long_name);
      for (const std::string& c : error.candidates) text += fmt::format(" '--{}'", c);
      return text;
    }
  }
  return fmt::format("{}: invalid option", prog);
}

}  // namespace strata::tools
