#!/usr/bin/env bash
# Runs one fuzz target for a given time: `fuzz/run.sh TARGET SECONDS [extra libFuzzer flags]`,
# TARGET one of arena, heap, heap_pages, slab. Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
# Debug assertions are on (`-a`), so the engine's own invariants are checked on every step.
# The corpus is kept in fuzz/corpus/TARGET (not committed); findings go to fuzz/artifacts/TARGET.
# The last lines of the log (executions, coverage) are what docs/BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target: arena, heap, heap_pages or slab}
secs=${2:?seconds}
shift 2
mkdir -p "corpus/$target" logs
cargo +nightly fuzz run -a "$target" "corpus/$target" -- \
    -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 "$@" \
    2>&1 | tee "logs/$target.log" | grep -E "^#[0-9]+.*(pulse|DONE)|stat::|ERROR|panicked|SUMMARY" || true
tail -n 20 "logs/$target.log" | grep -E "stat::number_of_executed_units|Done|ERROR" || true
