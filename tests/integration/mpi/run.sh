#!/usr/bin/env bash
# The MPI communicator under mpirun: tests/integration/mpi/mpi_check.cc for 2 and 4 ranks.
#
#   tests/integration/mpi/run.sh <path to mpi_check>
#
# For each size: `mpi_check collectives` must exit 0 (every check passed on every rank), and
# `mpi_check deadline` must exit 3 (the ranks that did not sleep saw kDeadlineExceeded in time and
# rank 0 ended the job with MPI_Abort(3)); any other status, or a hang past 120 s, fails.
# Runs as root too (containers, CI), and with more ranks than cores (--oversubscribe).
set -uo pipefail

MPI_CHECK=${1:?usage: run.sh <path to mpi_check>}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One machine: TCP (when used) on loopback only, no probing of other interfaces on CI machines.
export OMPI_MCA_btl_tcp_if_include=${OMPI_MCA_btl_tcp_if_include:-lo}
export OMPI_MCA_oob_tcp_if_include=${OMPI_MCA_oob_tcp_if_include:-lo}

failed=0
run() {  # run <ranks> <scenario> <expected exit status>
  local n=$1 scenario=$2 want=$3
  timeout 120 mpirun --oversubscribe --allow-run-as-root -n "$n" "$MPI_CHECK" "$scenario"
  local got=$?
  if [[ $got -eq $want ]]; then
    echo "mpi: $scenario with $n ranks: ok"
  else
    local why="exit $got, expected $want"
    [[ $got -eq 124 ]] && why="still running after 120 s: killed"
    echo "mpi: $scenario with $n ranks: FAILED ($why)" >&2
    failed=1
  fi
}

for n in 2 4; do
  run "$n" collectives 0
  run "$n" deadline 3
done
exit $failed
