/* (3) Mixed-size churn, single-threaded: a window of live blocks where each step frees a
 * random one and allocates a new one, sizes drawn from a skewed mix (mostly small, some
 * medium, a few large enough to be mapped), each block touched when allocated.
 * usage: churn [steps]   (default 10000000) */
#include <string.h>
#include "common.h"

static size_t pick_size(uint64_t *rng) {
    size_t r = below(rng, 1000);
    if (r < 700) return 8 + below(rng, 120);         /* small objects */
    if (r < 950) return 128 + below(rng, 1900);      /* medium */
    if (r < 998) return 2048 + below(rng, 30000);    /* buffers */
    return 131072 + below(rng, 400000);              /* large, usually mapped */
}

int main(int argc, char **argv) {
    long steps = size_arg(argc, argv, 10000000);
    enum { WINDOW = 8192 };
    static char *live[WINDOW];
    static size_t len[WINDOW];
    uint64_t rng = 3, check = 0;
    for (long s = 0; s < steps; s++) {
        size_t i = below(&rng, WINDOW);
        if (live[i]) {
            check += (unsigned char)live[i][len[i] - 1];
            free(live[i]);
        }
        len[i] = pick_size(&rng);
        live[i] = must(malloc(len[i]));
        memset(live[i], (int)(s & 0xFF), len[i] < 256 ? len[i] : 256);
        live[i][len[i] - 1] = (char)s;
    }
    for (int i = 0; i < WINDOW; i++) free(live[i]);
    printf("churn %ld %llu\n", steps, (unsigned long long)check);
    return 0;
}
