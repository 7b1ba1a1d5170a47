#!/usr/bin/env python3
"""Checks the Kubernetes examples against what imapstage needs of them.

Usage: check_kubernetes.py IMAPSTAGE EXPORT_JOB.yaml MERGE_JOB.yaml

A real cluster (or kubectl --dry-run, which needs one) is not available to
the tests, so this checks the manifests structurally: valid YAML, the kinds
and API versions, an Indexed Job whose JOB_COMPLETIONS equals its
completions, the archive on a PersistentVolumeClaim defined beside it,
secrets from a Secret mounted read-only as files that the arguments name,
no secret in argv or env, every imapstage option known to the binary, and a
merge Job over exactly the shard directories the export Job writes.
Prints the first problem and exits 1, or exits 0.
"""
import re
import subprocess
import sys

import yaml


def fail(msg):
    print("check_kubernetes: " + msg, file=sys.stderr)
    sys.exit(1)


def known_options(imapstage, command):
    out = subprocess.run([imapstage, command, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


def container_args(job):
    c = job["spec"]["template"]["spec"]["containers"]
    if len(c) != 1:
        fail(f"{job['metadata']['name']}: one container expected")
    return c[0], c[0].get("args", [])


def main(argv):
    imapstage, export_file, merge_file = argv
    docs = [d for d in yaml.safe_load_all(open(export_file)) if d]
    by_kind = {d["kind"]: d for d in docs}
    for kind, api in (("Job", "batch/v1"), ("PersistentVolumeClaim", "v1"), ("ConfigMap", "v1")):
        if kind not in by_kind:
            fail(f"{export_file}: no {kind}")
        if by_kind[kind]["apiVersion"] != api:
            fail(f"{export_file}: {kind} is not {api}")
    job = by_kind["Job"]
    spec = job["spec"]
    if spec.get("completionMode") != "Indexed":
        fail("the export Job is not an Indexed Job")
    n = spec["completions"]
    if not isinstance(n, int) or n < 1 or spec.get("parallelism", 1) > n:
        fail("completions must be a positive number, parallelism at most that")
    pod = spec["template"]["spec"]
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        fail("a Job's pods need restartPolicy Never or OnFailure")
    container, args = container_args(job)
    env = {e["name"]: e for e in container.get("env", [])}
    if env.get("JOB_COMPLETIONS", {}).get("value") != str(n):
        fail(f"JOB_COMPLETIONS must be set to the Job's completions ({n})")
    for e in env.values():
        if re.search(r"pass|secret|token", e["name"], re.I) and "value" in e:
            fail(f"env {e['name']} carries a secret inline")
    if args[:1] != ["export"]:
        fail("the export Job does not run imapstage export")
    options = dict(a.split("=", 1) if "=" in a else (a, "") for a in args[1:])
    known = known_options(imapstage, "export")
    for o in options:
        if o not in known:
            fail(f"imapstage export has no option {o}")
    if "--shard" in options:
        fail("the export Job names --shard: the pods take their shard from JOB_COMPLETION_INDEX")
    for o in ("--password", "--password-env"):
        if o in options:
            fail(f"{o} on the command line")

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    def volume_at(path):
        best = max((p for p in mounts if path == p or path.startswith(p.rstrip("/") + "/")), key=len, default=None)
        if best is None:
            fail(f"{path} is on no mounted volume")
        return mounts[best], volumes[mounts[best]["name"]]

    _, archive_volume = volume_at(options["--archive"])
    claim = archive_volume.get("persistentVolumeClaim", {}).get("claimName")
    if claim != by_kind["PersistentVolumeClaim"]["metadata"]["name"]:
        fail("the archive is not on the PersistentVolumeClaim defined beside the Job")
    mount, secret_volume = volume_at(options["--accounts"])
    if "secret" not in secret_volume or not mount.get("readOnly"):
        fail("the accounts file is not in a Secret mounted read-only")
    config_mount, config_volume = volume_at(options["--config"])
    if "configMap" not in config_volume:
        fail("the config is not from the ConfigMap")
    config_text = by_kind["ConfigMap"]["data"]["config.toml"]
    for m in re.finditer(r'(password_file|ca_file)\s*=\s*"([^"]+)"', config_text):
        _, vol = volume_at(m.group(2))
        if "secret" not in vol:
            fail(f"{m.group(1)} {m.group(2)} is not in the Secret")
    if re.search(r"^\s*password\s*=", config_text, re.M):
        fail("an inline password in the config")
    profile = options.get("--source-profile")
    if profile and f"[profiles.{profile}]" not in config_text:
        fail(f"the config has no profile {profile}")

    merge = [d for d in yaml.safe_load_all(open(merge_file)) if d]
    if len(merge) != 1 or merge[0]["kind"] != "Job" or merge[0]["apiVersion"] != "batch/v1":
        fail(f"{merge_file}: one batch/v1 Job expected")
    mc, margs = container_args(merge[0])
    line = " ".join(mc.get("command", []) + margs)
    m = re.search(r"imapstage merge --archive (\S+) (\S+)", line)
    if not m:
        fail("the merge Job does not run imapstage merge")
    archive = options["--archive"].rstrip("/")
    if m.group(2) != f"{archive}/shard-*-of-{n}":
        fail(f"the merge Job merges {m.group(2)}, the export Job writes {archive}/shard-*-of-{n}")
    mvol = {v["name"]: v for v in merge[0]["spec"]["template"]["spec"]["volumes"]}
    if not any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in mvol.values()):
        fail("the merge Job does not mount the archive's claim")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
