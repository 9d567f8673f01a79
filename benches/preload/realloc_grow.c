/* (4) realloc growth, single-threaded: many buffers grown a few bytes at a time (string
 * builders, vectors), interleaved so that they compete for the space after each other; some
 * finish and are freed, new ones start, a few grow past the mmap threshold.
 * usage: realloc_grow [appends]   (default 15000000) */
#include <string.h>
#include "common.h"

int main(int argc, char **argv) {
    long appends = size_arg(argc, argv, 15000000);
    enum { BUFFERS = 512 };
    static char *buf[BUFFERS];
    static size_t len[BUFFERS], cap[BUFFERS], limit[BUFFERS];
    uint64_t rng = 4, check = 0;
    for (long a = 0; a < appends; a++) {
        size_t i = below(&rng, BUFFERS);
        if (!limit[i]) limit[i] = below(&rng, 100) == 0 ? 1u << 20 : 64 + below(&rng, 16000);
        size_t add = 1 + below(&rng, 24);
        if (len[i] + add > cap[i]) {
            /* Grow by a little, as naive builders do, or double, as vectors do. */
            cap[i] = (i & 1) ? len[i] + add + 16 : (cap[i] ? 2 * cap[i] : 32);
            if (cap[i] < len[i] + add) cap[i] = len[i] + add;
            buf[i] = must(realloc(buf[i], cap[i]));
        }
        memset(buf[i] + len[i], (int)(a & 0x7F), add);
        len[i] += add;
        if (len[i] >= limit[i]) {
            check += len[i] + (unsigned char)buf[i][len[i] / 2];
            free(buf[i]);
            buf[i] = NULL;
            len[i] = cap[i] = limit[i] = 0;
        }
    }
    for (int i = 0; i < BUFFERS; i++) free(buf[i]);
    printf("realloc_grow %ld %llu\n", appends, (unsigned long long)check);
    return 0;
}
