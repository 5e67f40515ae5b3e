#!/usr/bin/env bash
# Run an rwsjax job and re-run it after preemption until it finishes.
#
#   launch/run_until_done.sh configs/rift.py:paper runs/rift_paper [--config.model.name=resnet34 ...]
#
# rwsjax exits with status 143 after SIGTERM/SIGINT once it has written a
# checkpoint; re-running the same command resumes from it. Any other non-zero
# status is a real failure and stops the loop.
set -uo pipefail
config="${1:?usage: $0 CONFIG[:preset] WORKDIR [overrides...]}"
workdir="${2:?usage: $0 CONFIG[:preset] WORKDIR [overrides...]}"
shift 2
while true; do
  python -m rwsjax.main --config="$config" --workdir="$workdir" "$@"
  status=$?
  if [ "$status" -eq 0 ]; then exit 0; fi
  if [ "$status" -ne 143 ]; then echo "rwsjax failed with status $status" >&2; exit "$status"; fi
  echo "preempted; resuming from the last checkpoint in $workdir" >&2
done
