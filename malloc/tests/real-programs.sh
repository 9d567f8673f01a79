#!/usr/bin/env bash
# Real programs on strata-malloc: each runs under glibc's malloc and under
# LD_PRELOAD=libstrata_malloc.so, and must give the same result under both.
#
#   semantics    a C program checking the malloc family's C semantics (constructor included)
#   fork         threads allocate while the main thread forks; no child may hang
#   sqlite       sqlite3 on a few hundred thousand rows: insert, index, group, join, update,
#                delete, vacuum, integrity check
#   perl         a hash- and string-heavy perl script
#   git          init, commit, log, gc and fsck a copy of a source tree
#   cpython      CPython's own test suite files (dicts, strings, json, re, pickle, subprocess,
#                threads, ...) with PYTHONMALLOC=malloc: the same test cases pass
#   misuse       one C program per misuse class (strata only): each dies of SIGABRT with the
#                expected line on stderr
#
# usage: real-programs.sh [--quick | --full] [--lib PATH] [CASE...]
#   --quick (default) is the CI subset, a few minutes on 2 cores; --full runs larger inputs and
#   the whole CPython selection. --lib uses a library already built instead of building one.
#   Naming cases runs only those. Ends with the line "N passed, N failed"; exits non-zero if any
#   case failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/malloc/tests"
MODE=quick
LIB=""
CASES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --lib) LIB=$(realpath "$2"); shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) CASES+=("$1") ;;
    esac
    shift
done
if [ ${#CASES[@]} -eq 0 ]; then
    CASES=(semantics misuse fork sqlite perl git cpython)
    if ! python3 -c 'import test.support' 2> /dev/null; then
        echo "!!!! CPython's test suite is not installed: the cpython case is NOT run !!!!"
        CASES=(semantics misuse fork sqlite perl git)
    fi
fi

if [ "$MODE" = full ]; then
    FORKS=1000 SQL_ROWS=1000000 PERL_ROUNDS=300000 GIT_COMMITS=60
    PY_TESTS="test_dict test_unicode test_string test_json test_re test_pickle test_marshal
              test_subprocess test_threading test_thread test_list test_set test_bytes
              test_collections test_ordered_dict test_deque test_itertools test_functools
              test_sort test_long test_struct test_weakref test_gc test_memoryview test_tuple
              test_heapq test_userdict test_array"
else
    FORKS=300 SQL_ROWS=300000 PERL_ROUNDS=40000 GIT_COMMITS=12
    PY_TESTS="test_dict test_unicode test_json test_re test_pickle test_thread test_set
              test_collections test_list test_string test_struct test_heapq"
fi

WORK=$(mktemp -d /tmp/strata-real.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0
FAILURES=()

note() { printf '%s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); note "PASS $1${2:+ ($2)}"; }
fail() {
    FAILED=$((FAILED + 1))
    FAILURES+=("$1")
    note "FAIL $1: $2"
}

# ------------------------------------------------------------------------------ set-up
if [ -z "$LIB" ]; then
    (cd "$ROOT" && cargo build --release -p strata-malloc --quiet) || { echo "build failed"; exit 1; }
    LIB="$ROOT/target/release/libstrata_malloc.so"
fi
[ -f "$LIB" ] || { echo "no library at $LIB"; exit 1; }
note "library: $LIB ($MODE)"

mkdir -p "$WORK/bin"
CFLAGS="-O2 -Wall -Wno-unused-result -pthread"
gcc $CFLAGS -o "$WORK/bin/semantics" "$HERE/c/semantics.c" || exit 1
gcc $CFLAGS -o "$WORK/bin/fork_storm" "$HERE/c/fork_storm.c" || exit 1
for src in "$HERE"/c/misuse/*.c; do
    gcc $CFLAGS -o "$WORK/bin/misuse-$(basename "$src" .c)" "$src" || exit 1
done

# The interpreter itself, not a version manager's shell shim.
PY=$(python3 -c 'import sys; print(sys.executable)')

# Runs "$@" with the allocator named by $1 (glibc or strata); every child inherits it.
under() {
    local alloc=$1
    shift
    if [ "$alloc" = strata ]; then
        LD_PRELOAD="$LIB" "$@"
    else
        "$@"
    fi
}

# Runs case function $2 under glibc, then strata, and compares what each wrote to its output
# file (stdout, plus the exit status). The function gets the allocator and a scratch folder.
compare() {
    local name=$1 fn=$2 alloc t0 t1 times=""
    for alloc in glibc strata; do
        mkdir -p "$WORK/$name-$alloc"
        t0=$(date +%s.%N)
        ( cd "$WORK/$name-$alloc" && "$fn" "$alloc" "$WORK/$name-$alloc" ) \
            > "$WORK/$name.$alloc.out" 2> "$WORK/$name.$alloc.err"
        echo "exit status $?" >> "$WORK/$name.$alloc.out"
        t1=$(date +%s.%N)
        times+="${times:+, }$alloc $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
    done
    if ! grep -q "^exit status 0$" "$WORK/$name.glibc.out"; then
        fail "$name" "failed under glibc too: $(tail -3 "$WORK/$name.glibc.err" | tr '\n' ' ')"
    elif diff -q "$WORK/$name.glibc.out" "$WORK/$name.strata.out" > /dev/null; then
        pass "$name" "$times"
    else
        fail "$name" "strata's result differs from glibc's:"
        diff "$WORK/$name.glibc.out" "$WORK/$name.strata.out" | head -20
        tail -5 "$WORK/$name.strata.err"
    fi
}

# ------------------------------------------------------------------------------ cases
case_semantics() { under "$1" "$WORK/bin/semantics"; }

case_fork() { under "$1" timeout 600 "$WORK/bin/fork_storm" "$FORKS" 2; }

case_sqlite() {
    sed "s/ROWS/$SQL_ROWS/g" "$HERE/programs/workload.sql" > "$2/workload.sql"
    under "$1" timeout 600 sqlite3 "$2/db" < "$2/workload.sql"
}

case_perl() { under "$1" timeout 600 perl "$HERE/programs/strings.pl" "$PERL_ROUNDS"; }

case_git() {
    local alloc=$1 dir=$2/tree
    mkdir -p "$dir" "$2/home"
    # A copy of this repository's files (the full run adds CPython's standard library).
    git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 cp --parents -t "$dir")
    if [ "$MODE" = full ]; then
        cp -r "$(dirname "$("$PY" -c 'import os; print(os.__file__)')")/json" \
              "$(dirname "$("$PY" -c 'import os; print(os.__file__)')")/email" \
              "$(dirname "$("$PY" -c 'import os; print(os.__file__)')")/test/test_email" "$dir/"
    fi
    (
        cd "$dir" || exit 1
        export HOME=$2/home GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=strata GIT_COMMITTER_NAME=strata \
               GIT_AUTHOR_EMAIL=strata@example.com GIT_COMMITTER_EMAIL=strata@example.com
        export GIT_AUTHOR_DATE="2026-12-01T12:00:00Z" GIT_COMMITTER_DATE="2026-12-01T12:00:00Z"
        [ "$alloc" = strata ] && export LD_PRELOAD="$LIB"
        git init -q -b main . && git add -A && git commit -q -m "import the tree" || exit 1
        local i f
        for i in $(seq 1 "$GIT_COMMITS"); do
            for f in $(git ls-files | awk -v i="$i" 'NR % 7 == i % 7' | head -20); do
                printf 'edit %d of %s\n' "$i" "$f" >> "$f"
            done
            git mv -k "$(git ls-files | sed -n "${i}p")" "renamed-$i" 2> /dev/null
            git commit -q -am "edit round $i" || exit 1
        done
        git log --stat --format='%H %s'
        git log -p -3 | md5sum
        git gc -q ${GIT_GC_FLAGS:-} || exit 1
        git fsck --full --strict 2>&1 || exit 1
        git count-objects -v | grep -E '^(count|garbage|size-garbage)'
        git rev-list --all --objects | wc -l
        git diff --stat HEAD~5 HEAD | tail -1
        git blame -s "$(git ls-files | head -1)" | md5sum
    )
}

# CPython's test files; the result is the outcome of every test case (from the JUnit report),
# so "the same tests pass" is checked case by case.
case_cpython() {
    # shellcheck disable=SC2086
    PYTHONMALLOC=malloc under "$1" timeout 1200 "$PY" -m test -q --junit-xml "$2/junit.xml" $PY_TESTS \
        > "$2/log" 2>&1
    "$PY" - "$2/junit.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
outcomes = []
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
    name = ".".join(n for n in (case.get("classname"), case.get("name")) if n)
    outcomes.append(f"{name} {kinds[0] if kinds else 'passed'}")
for line in sorted(outcomes):
    print(line)
print(len(outcomes), "test cases")
EOF
}

# Each misuse program prints "expect ADDRESS", then must die of SIGABRT with exactly one line
# on stderr: "strata-alloc: FUNCTION: MESSAGE" naming that address.
case_misuse() {
    local prog want out err rc addr line
    while read -r prog want; do
        out=$WORK/misuse-$prog.out err=$WORK/misuse-$prog.err
        # In a shell whose stderr is dropped: its own "Aborted" notice goes there.
        rc=$( { LD_PRELOAD="$LIB" timeout 60 "$WORK/bin/misuse-$prog" > "$out" 2> "$err"; echo $?; } 2> /dev/null )
        addr=$(sed -n 's/^expect //p' "$out")
        line=${want//ADDR/$addr}
        if [ "$rc" -ne 134 ]; then
            fail "misuse/$prog" "exit status $rc, not SIGABRT (134); stdout: $(tr '\n' ' ' < "$out")"
        elif [ "$(wc -l < "$err")" -ne 1 ] || [ "$(head -c ${#line} "$err")" != "$line" ]; then
            fail "misuse/$prog" "stderr was: $(cat "$err"); expected a line starting: $line"
        else
            pass "misuse/$prog" "$(cat "$err")"
        fi
    done <<'EOF'
double_free strata-alloc: free: double free of ADDR: the block was already freed
double_free_after_reuse strata-alloc: free: double free of ADDR: the block was already freed
double_free_mapped strata-alloc: free: double free of ADDR: the block was already freed
free_stack strata-alloc: free: invalid pointer ADDR: it does not point into this allocator
free_global strata-alloc: free: invalid pointer ADDR: it does not point into this allocator
free_interior strata-alloc: free: invalid pointer ADDR: it points into the middle of an allocated block
free_unaligned strata-alloc: free: invalid pointer ADDR: it is not aligned like any block
realloc_freed strata-alloc: realloc: double free of ADDR: the block was already freed
overflow_header strata-alloc: free: heap corruption at ADDR: block header was overwritten
free_sized_wrong strata-alloc: free_sized: invalid pointer ADDR: the block is smaller than the size the caller gives
EOF
}

for c in "${CASES[@]}"; do
    case "$c" in
        misuse) case_misuse ;;
        semantics|fork|sqlite|perl|git|cpython) compare "$c" "case_$c" ;;
        *) fail "$c" "no such case" ;;
    esac
done

[ ${#FAILURES[@]} -gt 0 ] && note "failed: ${FAILURES[*]}"
echo "real-programs: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
