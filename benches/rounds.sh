#!/usr/bin/env bash
# Interleaved rounds of the stand-alone heap workloads, each contender in turn within a round,
# and the ratio of each to glibc (`system`) in the same round: min / median / max over rounds.
#
#   benches/rounds.sh [rounds]        (from the repository root; builds the examples first)
#
# Workloads: the recorded CPython trace through the Allocator trait (trace_loop, best of 3
# replays per round), talc's random actions at max=200 and max=30000 (ra_loop), and the
# alloc/free churn in the Heap and the Arena (churn, one round each call).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p strata-benches --example trace_loop --example ra_loop --example churn
bin="$target/release/examples"
out=$(mktemp)
for r in $(seq 1 "$rounds"); do
    for who in strata system mimalloc; do
        t=$("$bin/trace_loop" "$who" 3 | awk '/best/ {print $3}')
        echo "$r trace $who $t" >> "$out"
    done
    for max in 200 30000; do
        steps=$([ "$max" = 200 ] && echo 5000000 || echo 1000000)
        for who in strata talc system mimalloc; do
            t=$("$bin/ra_loop" "$who" "$max" "$steps" | awk '/ns\/step/ {print $3}')
            echo "$r ra$max $who $t" >> "$out"
        done
    done
    "$bin/churn" 1 2000000 |
        awk -v r="$r" '{for (i = 1; i + 2 <= NF; i++) if ($(i + 2) == "ns") print r, "churn", $i, $(i + 1)}' >> "$out"
done
python3 - "$out" <<'EOF'
import collections, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 4]
t = collections.defaultdict(dict)
for r, w, who, v in rows:
    try:
        t[(w, r)][who] = float(v)
    except ValueError:
        pass
work = sorted({w for w, _ in t})
for w in work:
    ratios = collections.defaultdict(list)
    best = collections.defaultdict(lambda: float("inf"))
    for (w2, r), d in t.items():
        if w2 != w or "system" not in d:
            continue
        for who, v in d.items():
            ratios[who].append(d["system"] / v)
            best[who] = min(best[who], v)
    print(f"{w}: glibc time / contender time, min / median / max over {len(ratios['system'])} rounds (best time)")
    for who, rs in sorted(ratios.items()):
        print(f"  {who:<13} {min(rs):5.2f} / {statistics.median(rs):5.2f} / {max(rs):5.2f}   ({best[who]:.1f})")
EOF
rm -f "$out"
