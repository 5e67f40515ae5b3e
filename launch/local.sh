#!/usr/bin/env bash
# Run N cooperating processes of an rwsjax command on this machine (JAX's distributed runtime).
#
#   launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS COMMAND...
#   e.g. launch/local.sh 2 2 rwsjax run --config=rift:smoke --workdir=runs/mp
#
# Every process gets RWSJAX_COORDINATOR / RWSJAX_NUM_PROCESSES / RWSJAX_PROCESS_ID, so `rwsjax.main`
# joins them into one run over NUM_PROCESSES x DEVICES_PER_PROCESS devices.  On CPU (default, or
# PLATFORM=cpu) each process gets DEVICES_PER_PROCESS forced host devices and the collectives run
# over gloo — the way to test multi-host code on one machine.  With PLATFORM=gpu process i sees
# GPUs i*D .. i*D+D-1 (CUDA_VISIBLE_DEVICES).  Process 0 prints to this terminal; process i>0 logs
# to ${LOG_DIR:-.}/process_i.log.  If any process fails, the others are stopped and the exit status
# is the first failure's.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
NUM=$1; PER=$2; shift 2
PLATFORM=${PLATFORM:-cpu}
LOG_DIR=${LOG_DIR:-.}
mkdir -p "$LOG_DIR"
PORT=${PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export RWSJAX_COORDINATOR="127.0.0.1:$PORT" RWSJAX_NUM_PROCESSES="$NUM"
pids=()
for ((i = 0; i < NUM; i++)); do
  if [[ $PLATFORM == cpu ]]; then
    env_dev=(JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$PER ${XLA_FLAGS:-}")
  else
    env_dev=("CUDA_VISIBLE_DEVICES=$(seq -s, $((i * PER)) $((i * PER + PER - 1)))")
  fi
  if [[ $i -eq 0 ]]; then
    env "${env_dev[@]}" RWSJAX_PROCESS_ID=$i "$@" &
  else
    env "${env_dev[@]}" RWSJAX_PROCESS_ID=$i "$@" > "$LOG_DIR/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
status=0
while ((${#pids[@]})); do
  if wait -n "${pids[@]}"; then rc=0; else rc=$?; fi
  alive=()
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
  pids=("${alive[@]+"${alive[@]}"}")
  if [[ $rc -ne 0 && $status -eq 0 ]]; then
    status=$rc
    echo "launch/local.sh: a process exited with status $rc; stopping the others" >&2
    ((${#pids[@]})) && kill -TERM "${pids[@]}" 2>/dev/null || true
  fi
done
exit $status
