#!/usr/bin/env bash
# Run an rwsjax job on every host of a Cloud TPU VM pod slice (e.g. v4-32 = 4 hosts x 4 chips).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/shared/runs/rift_paper \
#     launch/tpu_vm_pod.sh --config=rift:paper --config.at.batch_size=512 --config.at.learning_rate=0.4
#
# Installs this checkout on every worker (first run: SETUP=1), then starts `python -m rwsjax.main` on all
# workers at once with `gcloud compute tpus tpu-vm ssh --worker=all`.  The processes find each other through
# the TPU metadata (no --coordinator needed).  WORKDIR must be on storage every host sees (Filestore/NFS or a
# GCS FUSE mount): Orbax checkpoints and reports go there, and re-running the same command after a preemption
# resumes from the last checkpoint.  The global batch is split over all chips: keep it divisible by the chip
# count and scale the learning rate linearly (lr = 0.1 x batch / 128 for PGD-AT).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (shared filesystem)}"
REPO=${REPO:-$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || echo "")}
DIR=${REMOTE_DIR:-rwsjax}
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }
if [[ ${SETUP:-0} == 1 ]]; then
  : "${REPO:?set REPO to a git URL the workers can clone}"
  ssh_all "git clone $REPO $DIR 2>/dev/null || git -C $DIR pull; cd $DIR && pip install -e . 'jax[tpu]' \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi
args=$(printf ' %q' "$@")
ssh_all "cd $DIR && TFDS_DATA_DIR=\${TFDS_DATA_DIR:-$WORKDIR/tensorflow_datasets} python -m rwsjax.main$args --workdir=$WORKDIR"
