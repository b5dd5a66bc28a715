#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: generates the SD-1.5-like folder (~2 GB) and the LLM-like sharded
# checkpoint (~5 GB), benchmarks each cold and hot (limit and baselines in the same run), times the
# header parser on 100,000 tensors, and draws bench/results/throughput.svg.
# Needs root for dropping the page cache (else it evicts file by file). Takes ~20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DIR=${BENCH_DIR:-/var/tmp/flashload-bench}
OUT=bench/results
make build >/dev/null
mkdir -p "$OUT" "$DIR"
[ -d "$DIR/sd15" ] || build/flashload gen sd15 "$DIR/sd15"
[ -d "$DIR/llm-5g" ] || build/flashload gen llm-5g "$DIR/llm-5g"
build/header_bench | tee "$OUT/header_bench.txt"
build/flashload bench "$DIR/sd15" --runs "$RUNS" --json-out "$OUT/sd15.json" | tee "$OUT/sd15.txt"
build/flashload bench "$DIR/llm-5g" --runs "$RUNS" --json-out "$OUT/llm-5g.json" | tee "$OUT/llm-5g.txt"
python3 bench/plot.py "$OUT/throughput.svg" "SD-1.5=$OUT/sd15.json" "LLM-5G=$OUT/llm-5g.json"
echo "results in $OUT/"
