// The imapstage binary: everything lives in imapstage_lib; main only hands
// over, after one process-wide choice about memory.
#include <malloc.h>

#include "cli/app.h"

int main(int argc, char** argv) {
  // Two malloc arenas instead of glibc's eight per core. Connections and
  // their helper threads free one another's buffers, and memory left free in
  // a per-thread arena is not reused by the others.
  mallopt(M_ARENA_MAX, 2);
  return imapstage::cli::run_main(argc, argv);
}
