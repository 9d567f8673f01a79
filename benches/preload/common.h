/* Shared by the allocation benchmarks: a deterministic generator and a checksum sink. The
 * programs time nothing themselves; run.sh measures wall time and peak RSS from outside. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* splitmix64: the same sequence on every run and every allocator. */
static inline uint64_t next_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline size_t below(uint64_t *state, size_t n) { return (size_t)(next_u64(state) % n); }

/* The size argument, with a default. */
static inline long size_arg(int argc, char **argv, long fallback) {
    return argc > 1 ? atol(argv[1]) : fallback;
}

/* Never NULL: a failed allocation ends the run with a message. */
static inline void *must(void *p) {
    if (!p) {
        fputs("allocation failed\n", stderr);
        exit(1);
    }
    return p;
}
