// The worked examples under examples/: the Kubernetes manifests are checked
// structurally (no cluster here, and kubectl --dry-run needs one) by
// tests/examples/check_kubernetes.py, which must also catch a manifest that
// is wrong. The Slurm recipe runs for real in tests/batch/shard_merge_test.
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

const std::string kSource = IMAPSTAGE_SOURCE_DIR;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

testing::ProcessResult check(const std::string& export_job, const std::string& merge_job) {
  return testing::run_process({"/usr/bin/python3", kSource + "/tests/examples/check_kubernetes.py",
                               testing::imapstage_binary(), export_job, merge_job});
}

TEST(Examples, KubernetesManifestsHoldTogether) {
  // The checker asks the binary which options exist; the merge Job needs its merge command.
  auto help = testing::run_imapstage({"merge", "--help"});
  ASSERT_EQ(help.exit_code, 0) << help.err;
  auto r = check(kSource + "/examples/kubernetes/export-job.yaml", kSource + "/examples/kubernetes/merge-job.yaml");
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
}

TEST(Examples, KubernetesCheckCatchesBrokenManifests) {
  testing::TempDir dir;
  std::string text = slurp(kSource + "/examples/kubernetes/export-job.yaml");
  std::string merge = kSource + "/examples/kubernetes/merge-job.yaml";
  struct Case {
    std::string from, to, says;
  } cases[] = {
      {"value: \"3\"", "value: \"4\"", "JOB_COMPLETIONS"},                 // count out of step with completions
      {"- --jobs=4", "- --jobs=4\n            - --shard=0/3", "--shard"},  // every pod the same shard
      {"- --jobs=4", "- --jobz=4", "no option --jobz"},                    // an option imapstage lacks
      {"completionMode: Indexed", "completionMode: NonIndexed", "Indexed"},
      {"readOnly: true", "readOnly: false", "Secret"},
  };
  for (auto& c : cases) {
    auto at = text.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    std::string broken = text;
    broken.replace(at, c.from.size(), c.to);
    std::string file = dir.path() + "/job.yaml";
    std::ofstream(file) << broken;
    auto r = check(file, merge);
    EXPECT_EQ(r.exit_code, 1) << c.to;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.to << ": " << r.err;
  }
}

}  // namespace
}  // namespace imapstage
