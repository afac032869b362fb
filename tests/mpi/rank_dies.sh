#!/bin/sh
# A rank that dies mid-job, or one that is stuck: the others must exit with an error within
# a bounded time, never hang. Usage: rank_dies.sh TEST_BINARY MPIRUN [MPIRUN_ARGS...]
binary=$1
shift
for mode in --die --stuck; do
  start=$(date +%s)
  out=$(timeout 90 "$@" -np 2 "$binary" "$mode" 2>&1)
  rc=$?
  elapsed=$(($(date +%s) - start))
  echo "rank_dies $mode: exit code $rc after ${elapsed}s"
  [ "$rc" -eq 124 ] && { echo "$out"; echo "rank_dies $mode: the job hung (killed by timeout)"; exit 1; }
  [ "$rc" -ne 0 ] || { echo "$out"; echo "rank_dies $mode: the job reported success"; exit 1; }
  [ "$elapsed" -le 60 ] || { echo "rank_dies $mode: took longer than 60 s"; exit 1; }
  if [ "$mode" = --stuck ]; then
    # Rank 0 gave up on its own after its 5 s timeout, naming the reason.
    echo "$out" | grep -q "rank 0: unavailable: rank 0: exchanging call status: no answer from the other ranks" ||
      { echo "$out"; echo "rank_dies --stuck: rank 0 did not report the timeout"; exit 1; }
  fi
done
exit 0
