/* (7) Per-thread churn, two threads: each thread frees only what it allocated itself (a
 * window of live blocks of mixed sizes per thread); nothing crosses threads but the
 * allocator's own shared state.
 * usage: perthread [steps per thread]   (default 5000000) */
#include <pthread.h>
#include <string.h>
#include "common.h"

enum { WINDOW = 4096 };
static long steps;

static void *churn(void *arg) {
    uint64_t rng = 7 + (uint64_t)(size_t)arg;
    char **live = must(calloc(WINDOW, sizeof *live));
    size_t *check = must(calloc(1, sizeof *check));
    for (long s = 0; s < steps; s++) {
        size_t i = below(&rng, WINDOW);
        if (live[i]) *check += (unsigned char)live[i][0];
        free(live[i]);
        size_t n = below(&rng, 10) < 7 ? 8 + below(&rng, 200) : 200 + below(&rng, 6000);
        live[i] = must(malloc(n));
        memset(live[i], (int)(s & 0xFF), n < 64 ? n : 64);
    }
    for (int i = 0; i < WINDOW; i++) free(live[i]);
    free(live);
    return check;
}

int main(int argc, char **argv) {
    steps = size_arg(argc, argv, 5000000);
    pthread_t w[2];
    for (size_t i = 0; i < 2; i++) pthread_create(&w[i], NULL, churn, (void *)i);
    size_t total = 0;
    for (int i = 0; i < 2; i++) {
        void *check;
        pthread_join(w[i], &check);
        total += *(size_t *)check;
        free(check);
    }
    printf("perthread %ld %zu\n", steps, total);
    return 0;
}
