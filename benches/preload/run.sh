#!/usr/bin/env bash
# Real programs and allocation-heavy C programs under glibc, strata-malloc, mimalloc and
# jemalloc side by side (LD_PRELOAD), several rounds: wall time and peak RSS, each as a ratio
# against glibc measured in the same round, with the spread over the rounds.
#
# usage: benches/preload/run.sh [--runs N] [WORKLOAD...]
#   workloads: strtree bignum churn realloc_grow (one thread); prodcons server perthread (two
#   threads); cpython (json/dict/string script), cpython-tests (a few files of CPython's test
#   suite), sqlite, perl, git. Default: all, 5 rounds.
#   Not CI: it installs the peers (libmimalloc2.0, libjemalloc2) with apt-get if they are
#   missing, and takes several minutes. Prints a markdown table; raw figures stay in the
#   results file it names.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/preload"
TESTS="$ROOT/malloc/tests/programs"
RUNS=5
WORKLOADS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) WORKLOADS+=("$1") ;;
    esac
    shift
done
[ ${#WORKLOADS[@]} -eq 0 ] && WORKLOADS=(strtree bignum churn realloc_grow prodcons server perthread
                                         cpython cpython-tests sqlite perl git)

# ------------------------------------------------------------------------------ the contenders
LIBDIR=/usr/lib/$(gcc -print-multiarch)
MIMALLOC=$LIBDIR/libmimalloc.so.2
JEMALLOC=$LIBDIR/libjemalloc.so.2
if [ ! -f "$MIMALLOC" ] || [ ! -f "$JEMALLOC" ]; then
    echo "installing the peers (libmimalloc2.0, libjemalloc2)"
    apt-get install -y -qq libmimalloc2.0 libjemalloc2 > /dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq libmimalloc2.0 libjemalloc2 > /dev/null; } ||
        { echo "could not install the peers"; exit 1; }
fi
(cd "$ROOT" && cargo build --release -p strata-malloc --quiet) || exit 1
STRATA=$ROOT/target/release/libstrata_malloc.so
ALLOCATORS=(glibc strata mimalloc jemalloc)
lib_of() {
    case "$1" in
        glibc) echo "" ;;
        strata) echo "$STRATA" ;;
        mimalloc) echo "$MIMALLOC" ;;
        jemalloc) echo "$JEMALLOC" ;;
    esac
}

WORK=$(mktemp -d /tmp/strata-preload.XXXXXX)
trap 'rm -rf "$WORK/scratch"' EXIT
mkdir -p "$WORK/bin" "$WORK/scratch"
for prog in strtree bignum churn realloc_grow prodcons server perthread; do
    gcc -O2 -Wall -pthread -o "$WORK/bin/$prog" "$HERE/$prog.c" || exit 1
done
PY=$(python3 -c 'import sys; print(sys.executable)')
sed "s/ROWS/300000/g" "$TESTS/workload.sql" > "$WORK/workload.sql"
git -C "$ROOT" ls-files -z | (cd "$ROOT" && tar --null -T - -cf "$WORK/tree.tar")

# The commands. Each gets a fresh scratch folder as its working directory; what it prints is
# compared with glibc's output of the same round.
command_of() {
    case "$1" in
        strtree|bignum|churn|realloc_grow|prodcons|server|perthread) echo "$WORK/bin/$1" ;;
        cpython) echo "env PYTHONMALLOC=malloc $PY $HERE/cpython_workload.py 40" ;;
        cpython-tests) echo "env PYTHONMALLOC=malloc $PY -m test -q test_json test_dict test_unicode test_re test_pickle" ;;
        sqlite) echo "sh -c 'sqlite3 db < $WORK/workload.sql'" ;;
        perl) echo "perl $TESTS/strings.pl 300000" ;;
        git) echo "sh -c 'tar -xf $WORK/tree.tar && git init -q -b main . && git add -A &&
             git -c user.name=b -c user.email=b@b commit -q -m import && git gc -q --aggressive &&
             git fsck --full --strict && git log --stat | wc -l'" ;;
    esac
}
threads_of() {
    case "$1" in
        prodcons|server|perthread) echo 2 ;;
        *) echo 1 ;;
    esac
}

declare -A measured
RESULTS=$WORK/results.tsv
echo -e "workload\tthreads\tallocator\tround\twall_s\tmaxrss_kb\tsame_output" > "$RESULTS"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); $(date -u +%Y-%m-%d)"
echo "results: $RESULTS"
for round in $(seq 1 "$RUNS"); do
    for w in "${WORKLOADS[@]}"; do
        cmd=$(command_of "$w")
        [ -n "$cmd" ] || { echo "no such workload: $w"; exit 1; }
        # Rotate the order every round so no allocator always runs first (cold caches, drift).
        n=${#ALLOCATORS[@]}
        for k in $(seq 0 $((n - 1))); do
            alloc=${ALLOCATORS[$(((k + round) % n))]}
            dir=$WORK/scratch/$w-$alloc
            rm -rf "$dir" && mkdir -p "$dir"
            lib=$(lib_of "$alloc")
            (cd "$dir" && /usr/bin/time -f "%e %M" -o "$WORK/time" \
                env ${lib:+LD_PRELOAD=$lib} sh -c "$cmd" > "$WORK/out.$alloc" 2> "$WORK/err.$alloc")
            read -r wall rss < <(tail -1 "$WORK/time")
            measured[$alloc]="$wall	$rss"
        done
        # Compared once every allocator has run: glibc is not always first.
        for alloc in "${ALLOCATORS[@]}"; do
            same=yes
            if ! diff -q "$WORK/out.glibc" "$WORK/out.$alloc" > /dev/null 2>&1; then
                same=no
                # The CPython test runner prints timings; only its verdict has to agree.
                if [ "$w" = cpython-tests ] && [ "$(grep -c 'Tests result: SUCCESS' "$WORK/out.glibc")" = \
                     "$(grep -c 'Tests result: SUCCESS' "$WORK/out.$alloc")" ]; then
                    same=yes
                fi
            fi
            echo -e "$w\t$(threads_of "$w")\t$alloc\t$round\t${measured[$alloc]}\t$same" >> "$RESULTS"
        done
    done
    echo "round $round of $RUNS done"
done

"$PY" - "$RESULTS" <<'EOF'
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
allocs = ["glibc", "strata", "mimalloc", "jemalloc"]
by = defaultdict(dict)  # (workload, round) -> alloc -> row
order, threads = [], {}
for r in rows:
    by[(r["workload"], r["round"])][r["allocator"]] = r
    if r["workload"] not in order:
        order.append(r["workload"])
    threads[r["workload"]] = r["threads"]

def cell(w, a, field):
    ratios = [float(g[a][field]) / float(g["glibc"][field])
              for (wk, _), g in by.items() if wk == w and a in g and float(g["glibc"][field]) > 0]
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

for field, title in (("wall_s", "wall time"), ("maxrss_kb", "peak RSS")):
    print(f"\n{title}, as a ratio to glibc in the same round (median, min-max over rounds; "
          "below 1 is better)\n")
    print("| workload | threads | glibc (median) | " + " | ".join(allocs[1:]) + " |")
    print("|---|---|---|" + "---|" * (len(allocs) - 1))
    for w in order:
        base = [float(g["glibc"][field]) for (wk, _), g in by.items() if wk == w]
        unit = "s" if field == "wall_s" else "MB"
        med = statistics.median(base) / (1 if field == "wall_s" else 1024)
        print(f"| {w} | {threads[w]} | {med:.2f} {unit} | " +
              " | ".join(cell(w, a, field) for a in allocs[1:]) + " |")
bad = sorted({(r["workload"], r["allocator"]) for r in rows if r["same_output"] == "no"})
if bad:
    print("\noutput differed from glibc's for: " + ", ".join(f"{w}/{a}" for w, a in bad))
EOF
