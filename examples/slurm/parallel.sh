#!/bin/bash
# The same shards without a scheduler: GNU parallel runs N imapstage
# processes on this machine (or on several with --sshlogin, the archive
# directory then on a file system they share, each shard writing its own
# directory under it), then merges them.
#
#   ARCHIVE=/srv/archive ACCOUNTS=accounts.csv CONFIG=config.toml SHARDS=3 examples/slurm/parallel.sh [export options]
#
# Each shard's JSON events go to $ARCHIVE/export-<i>.jsonl. A shard that
# fails is run again alone: imapstage export ... --shard I/N resumes it.
set -euo pipefail

IMAPSTAGE=${IMAPSTAGE:-imapstage}
SHARDS=${SHARDS:-3}
: "${ARCHIVE:?set ARCHIVE}" "${ACCOUNTS:?set ACCOUNTS}" "${CONFIG:?set CONFIG}"
PROFILE=${PROFILE:-source}
PER_SERVER=${PER_SERVER:-12}   # over all shards: each takes its part

mkdir -p "$ARCHIVE"
seq 0 $((SHARDS - 1)) | parallel --will-cite --halt never -j "$SHARDS" \
  "$IMAPSTAGE" export --archive "$ARCHIVE" --accounts "$ACCOUNTS" --config "$CONFIG" \
  --source-profile "$PROFILE" --per-server "$PER_SERVER" --json --shard "{}/$SHARDS" "$@" \
  '>' "$ARCHIVE/export-{}.jsonl"
"$IMAPSTAGE" merge --archive "$ARCHIVE/merged" "$ARCHIVE"/shard-*-of-"$SHARDS"
"$IMAPSTAGE" status --archive "$ARCHIVE" --kind export
