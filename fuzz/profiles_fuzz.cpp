// Config files (batch/profiles.h): any text gives a Config or Error(usage),
// never a crash or another exception; every profile that parses describes an
// endpoint or refuses with Error(usage).
#include <cstdlib>
#include <string>

#include "batch/profiles.h"
#include "common/error.h"

using namespace imapstage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    batch::Config config = batch::parse_config(text, "fuzz.toml");
    for (auto& [name, profile] : config.profiles) {
      if (name != profile.name) std::abort();
      try {
        auto e = profile.endpoint();
        if (e.host != profile.host) std::abort();
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::usage) std::abort();
      }
      (void)profile.serves("someone@example.org");
      (void)config.profile_for("someone@example.org");
    }
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::usage) std::abort();
  }
  return 0;
}
