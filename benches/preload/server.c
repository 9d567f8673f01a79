/* (6) Server-style churn, two threads: each request allocates a few temporaries (freed at
 * its end, by the same thread) and one response that replaces a random entry of a shared
 * cache; the entry it evicts, usually allocated by the other thread, is freed here.
 * usage: server [requests per thread]   (default 1500000) */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include "common.h"

enum { CACHE = 16384 };
static _Atomic(char *) cache[CACHE];
static long requests;

static void *serve(void *arg) {
    uint64_t rng = 6 + (uint64_t)(size_t)arg;
    size_t *bytes = malloc(sizeof *bytes);
    *bytes = 0;
    for (long r = 0; r < requests; r++) {
        char *tmp[4];
        int temps = 1 + (int)below(&rng, 4);
        for (int t = 0; t < temps; t++) {
            size_t n = 32 + below(&rng, 2000);
            tmp[t] = must(malloc(n));
            memset(tmp[t], t, n < 128 ? n : 128);
        }
        size_t n = below(&rng, 50) == 0 ? 8192 + below(&rng, 60000) : 24 + below(&rng, 600);
        char *response = must(malloc(n));
        memcpy(response, tmp[0], 16);
        *bytes += n;
        char *evicted = atomic_exchange(&cache[below(&rng, CACHE)], response);
        free(evicted);
        for (int t = 0; t < temps; t++) free(tmp[t]);
    }
    return bytes;
}

int main(int argc, char **argv) {
    requests = size_arg(argc, argv, 1500000);
    pthread_t w[2];
    for (size_t i = 0; i < 2; i++) pthread_create(&w[i], NULL, serve, (void *)i);
    size_t total = 0;
    for (int i = 0; i < 2; i++) {
        void *bytes;
        pthread_join(w[i], &bytes);
        total += *(size_t *)bytes;
        free(bytes);
    }
    for (int i = 0; i < CACHE; i++) free(atomic_load(&cache[i]));
    printf("server %ld %zu\n", requests, total);
    return 0;
}
