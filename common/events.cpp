#include "common/events.h"

#include <chrono>

namespace imapstage {

double now_seconds() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() / 1000.0;
}

}  // namespace imapstage
