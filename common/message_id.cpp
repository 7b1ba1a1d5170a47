#include "common/message_id.h"

#include <cctype>
#include <strings.h>

namespace imapstage {

std::string header_field(std::string_view message, std::string_view name) {
  size_t pos = 0;
  while (pos < message.size()) {
    size_t eol = message.find('\n', pos);
    if (eol == std::string_view::npos) eol = message.size();
    std::string_view line = message.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) return {};  // end of the header section
    if (line.size() > name.size() && line[name.size()] == ':' &&
        strncasecmp(line.data(), name.data(), name.size()) == 0) {
      std::string value(line.substr(name.size() + 1));
      // Folded continuation lines start with white space.
      size_t next = eol + 1;
      while (next < message.size() && (message[next] == ' ' || message[next] == '\t')) {
        size_t end = message.find('\n', next);
        if (end == std::string_view::npos) end = message.size();
        std::string_view cont = message.substr(next, end - next);
        if (!cont.empty() && cont.back() == '\r') cont.remove_suffix(1);
        value += cont;
        next = end + 1;
      }
      size_t b = value.find_first_not_of(" \t");
      size_t e = value.find_last_not_of(" \t");
      return b == std::string::npos ? std::string() : value.substr(b, e - b + 1);
    }
    pos = eol + 1;
  }
  return {};
}

std::string extract_message_id(std::string_view message) { return header_field(message, "Message-ID"); }

}  // namespace imapstage
