#include "common/message_filter.h"

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <vector>

#include "common/error.h"

namespace imapstage {

std::string MessageFilter::describe() const {
  std::vector<std::string> parts;
  if (since) parts.push_back("--since " + format_day(*since));
  if (before) parts.push_back("--before " + format_day(*before));
  if (larger) parts.push_back(fmt::format("--larger {}", *larger));
  if (smaller) parts.push_back(fmt::format("--smaller {}", *smaller));
  return fmt::format("{}", fmt::join(parts, " "));
}

nlohmann::json MessageFilter::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  if (since) out["since"] = format_day(*since);
  if (before) out["before"] = format_day(*before);
  if (larger) out["larger"] = *larger;
  if (smaller) out["smaller"] = *smaller;
  return out;
}

MessageFilter MessageFilter::from_json(const nlohmann::json& j) {
  MessageFilter f;
  if (!j.is_object()) throw Error(ErrorKind::usage, "not a message filter: " + j.dump());
  try {
    if (j.contains("since")) f.since = parse_day(j.at("since").get<std::string>());
    if (j.contains("before")) f.before = parse_day(j.at("before").get<std::string>());
    if (j.contains("larger")) f.larger = j.at("larger").get<uint64_t>();
    if (j.contains("smaller")) f.smaller = j.at("smaller").get<uint64_t>();
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorKind::usage, "not a message filter: " + j.dump());
  }
  return f;
}

int64_t parse_day(const std::string& text) {
  std::tm tm{};
  int y, mo, d;
  char tail;
  if (text.size() != 10 || std::sscanf(text.c_str(), "%4d-%2d-%2d%c", &y, &mo, &d, &tail) != 3 || mo < 1 ||
      mo > 12 || d < 1 || d > 31)
    throw Error(ErrorKind::usage, fmt::format("not a date (YYYY-MM-DD): {}", text));
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  return static_cast<int64_t>(timegm(&tm));
}

std::string format_day(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

uint64_t parse_size(const std::string& text) {
  auto bad = [&] { return Error(ErrorKind::usage, fmt::format("not a size (e.g. 1500, 10k, 50MB, 1GiB): {}", text)); };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) throw bad();
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(text.substr(0, i), &used);
    if (used != i) throw bad();
  } catch (const std::logic_error&) {
    throw bad();
  }
  size_t j = i;
  while (j < text.size() && text[j] == ' ') ++j;
  std::string unit;
  for (; j < text.size(); ++j) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[j])));
  double scale = 1;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") scale = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib") scale = 1024.0 * 1024 * 1024;
  else throw bad();
  double bytes = std::floor(number * scale);
  if (!(bytes >= 0) || bytes > 1.8e19) throw bad();
  return static_cast<uint64_t>(bytes);
}

}  // namespace imapstage
