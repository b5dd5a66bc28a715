#!/usr/bin/env bash
# End-to-end tests of the flashload CLI on generated models: every command, every strategy, and the
# failures a user meets (truncated, corrupted, wrong kind of file, missing shard). Prints
# "N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
FL=${FLASHLOAD_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build/flashload}
# Not /tmp: it may be tmpfs, which refuses O_DIRECT; the direct path must be exercised.
WORK=$(mktemp -d "${FLASHLOAD_TEST_DIR:-/var/tmp}/flashload-it-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
passed=0; failed=0

check() {  # check NAME EXPECTED_EXIT CMD... ; stdout+stderr in $WORK/out
  local name=$1 want=$2; shift 2
  "$@" >"$WORK/out" 2>&1
  local got=$?
  if [ "$got" -eq "$want" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL $name: exit $got, expected $want"; sed 's/^/    /' "$WORK/out" | head -20
  fi
}
expect_output() {  # expect_output NAME PATTERN : the last command's output matches
  if grep -qE "$2" "$WORK/out"; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL $1: output lacks /$2/"; sed 's/^/    /' "$WORK/out" | head -20; fi
}

check "gen tiny" 0 "$FL" gen tiny "$WORK/tiny"
check "gen llm-tiny" 0 "$FL" gen llm-tiny "$WORK/llm"
check "gen refuses a non-empty folder" 1 "$FL" gen tiny "$WORK/tiny"
check "help" 0 "$FL" --help
expect_output "help lists commands" "inspect.*validate|validate"
check "no command is a usage error" 2 "$FL"

check "inspect diffusers folder" 0 "$FL" inspect "$WORK/tiny"
expect_output "inspect shows totals" "total: [0-9]+ files"
check "inspect --json" 0 "$FL" inspect --json "$WORK/llm"
check "validate folders" 0 "$FL" validate "$WORK/tiny" "$WORK/llm"

for s in auto direct buffered mmap; do
  check "load --verify --strategy $s (diffusers)" 0 "$FL" load --verify --strategy "$s" "$WORK/tiny"
  expect_output "verify identical ($s)" "all identical"
  check "load --verify --strategy $s (sharded)" 0 "$FL" load --verify --strategy "$s" "$WORK/llm"
done
check "load with a tiny budget and odd chunks" 0 "$FL" load --verify --budget-mib 1 --chunk-mib 1 --queue-depth 3 "$WORK/llm"
check "load --json" 0 "$FL" load --json "$WORK/tiny"
expect_output "load --json reports peak RSS" '"peak_rss_bytes":[0-9]+'
check "load --dry-run" 0 "$FL" load --dry-run "$WORK/llm"
expect_output "dry run lists chunks" "chunks"

# Failures.
shard=$(ls "$WORK"/llm/*.safetensors | head -1)
cp "$shard" "$WORK/trunc.safetensors"
truncate -s -1000 "$WORK/trunc.safetensors"
check "truncated file is invalid" 1 "$FL" validate "$WORK/trunc.safetensors"
expect_output "truncation is named" "1000 bytes"
check "truncated file fails to load" 1 "$FL" load "$WORK/trunc.safetensors"
printf 'version https://git-lfs.github.com/spec/v1\noid sha256:%064d\nsize 123\n' 0 >"$WORK/lfs.safetensors"
check "git-lfs pointer" 1 "$FL" validate "$WORK/lfs.safetensors"
expect_output "git-lfs diagnosed" "LFS"
printf '<!DOCTYPE html><html><body>Sign in</body></html>' >"$WORK/page.safetensors"
check "html page" 1 "$FL" load "$WORK/page.safetensors"
expect_output "html diagnosed" "HTML"
check "missing file" 1 "$FL" load "$WORK/nope.safetensors"
expect_output "missing file named" "nope.safetensors"
mkdir -p "$WORK/broken"; cp -r "$WORK"/llm/* "$WORK/broken/"
rm "$(ls "$WORK"/broken/*.safetensors | tail -1)"
check "missing shard" 1 "$FL" load "$WORK/broken"
check "bad strategy is a usage error" 2 "$FL" load --strategy warp "$WORK/tiny"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
