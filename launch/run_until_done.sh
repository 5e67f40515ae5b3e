#!/usr/bin/env bash
# Run an rwsjax job and re-run it after preemption until it finishes.
#
#   launch/run_until_done.sh rift:paper runs/rift_paper [--config.model.name=resnet34 ...]
#
# rwsjax exits with status 143 after SIGTERM (a scheduler's preemption notice)
# once it has written a checkpoint; re-running the same command resumes from it.
# SIGINT (Ctrl-C) checkpoints too but exits with 130: the loop stops, as does
# any other non-zero status (a real failure).
set -uo pipefail
config="${1:?usage: $0 CONFIG[:preset] WORKDIR [overrides...]}"
workdir="${2:?usage: $0 CONFIG[:preset] WORKDIR [overrides...]}"
shift 2
while true; do
  python -m rwsjax.main --config="$config" --workdir="$workdir" "$@"
  status=$?
  if [ "$status" -eq 0 ]; then exit 0; fi
  if [ "$status" -eq 130 ]; then echo "stopped by Ctrl-C; the same command resumes" >&2; exit 130; fi
  if [ "$status" -ne 143 ]; then echo "rwsjax failed with status $status" >&2; exit "$status"; fi
  echo "preempted; resuming from the last checkpoint in $workdir" >&2
done
