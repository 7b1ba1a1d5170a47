// The imapstage binary: everything lives in imapstage_lib; main only hands over.
#include "cli/app.h"

int main(int argc, char** argv) { return imapstage::cli::run_main(argc, argv); }
