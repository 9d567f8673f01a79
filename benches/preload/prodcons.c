/* (5) Producer/consumer, two threads: the producer allocates every block (mixed small and
 * medium sizes) and hands it over through a single-producer single-consumer ring; the
 * consumer reads it and frees it. Every free is of a block another thread allocated.
 * usage: prodcons [blocks]   (default 6000000) */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include "common.h"

enum { RING = 4096 };
static char *ring[RING];
static atomic_size_t head, tail; /* head: next to fill (producer); tail: next to take */
static long blocks;

static void *produce(void *arg) {
    (void)arg;
    uint64_t rng = 5;
    for (long b = 0; b < blocks; b++) {
        size_t n = below(&rng, 10) < 8 ? 16 + below(&rng, 240) : 256 + below(&rng, 4000);
        char *p = must(malloc(n));
        memset(p, (int)(b & 0xFF), n < 64 ? n : 64);
        p[0] = (char)b;
        size_t h = atomic_load_explicit(&head, memory_order_relaxed);
        while (h - atomic_load_explicit(&tail, memory_order_acquire) == RING) sched_yield();
        ring[h % RING] = p;
        atomic_store_explicit(&head, h + 1, memory_order_release);
    }
    return NULL;
}

static void *consume(void *arg) {
    uint64_t *sum = arg;
    for (long b = 0; b < blocks; b++) {
        size_t t = atomic_load_explicit(&tail, memory_order_relaxed);
        while (atomic_load_explicit(&head, memory_order_acquire) == t) sched_yield();
        char *p = ring[t % RING];
        atomic_store_explicit(&tail, t + 1, memory_order_release);
        *sum += (unsigned char)p[0];
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    blocks = size_arg(argc, argv, 6000000);
    uint64_t sum = 0;
    pthread_t p, c;
    pthread_create(&p, NULL, produce, NULL);
    pthread_create(&c, NULL, consume, &sum);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    printf("prodcons %ld %llu\n", blocks, (unsigned long long)sum);
    return 0;
}
