#!/usr/bin/env bash
# Interleaved rounds of the realloc-heavy buffers on a used heap (examples/buffers_loop.rs:
# random actions at max=30000 first, then 64 Vec<u8>s grown by doubling to 1 MiB in random
# order), strata, glibc and mimalloc in turn within a round, and glibc's time over each
# contender's in the same round: min / median / max over the rounds, for the first
# repetition on the heap and the median of the later ones.
#
#   benches/buffers.sh [rounds] [reps]     (from the repository root; set CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
reps=${2:-5}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p strata-benches --example buffers_loop
bin="$target/release/examples/buffers_loop"
out=$(mktemp)
for r in $(seq 1 "$rounds"); do
    for chunk in 1 256 4096; do
        for who in strata system mimalloc; do
            "$bin" "$who" "$chunk" "$reps" |
                awk -v r="$r" -v c="$chunk" -v w="$who" '/first/ {print r, "chunk=" c, w, $4, $7}' >> "$out"
        done
    done
done
python3 - "$out" <<'PY'
import collections, statistics, sys
t = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, w, who, first, later = line.split()
    t[(w, r)][who] = (float(first), float(later))
for w in sorted({w for w, _ in t}, key=lambda w: int(w.split("=")[1])):
    print(f"{w}: glibc time / contender time, min / median / max over rounds (best ms)")
    for k, name in ((0, "first"), (1, "later")):
        ratios = collections.defaultdict(list)
        best = collections.defaultdict(lambda: float("inf"))
        for (w2, r), d in t.items():
            if w2 != w or "system" not in d:
                continue
            for who, v in d.items():
                ratios[who].append(d["system"][k] / v[k])
                best[who] = min(best[who], v[k])
        for who, rs in sorted(ratios.items()):
            print(f"  {name:<5} {who:<9} {min(rs):5.2f} / {statistics.median(rs):5.2f} / {max(rs):5.2f}   ({best[who]:.1f})")
PY
rm -f "$out"
