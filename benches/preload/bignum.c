/* (2) Bignum-style arithmetic, single-threaded: every operation allocates its result as a
 * fresh limb array and frees its operands, as interpreters' integers do; thousands of small
 * blocks live at once (a table of numbers), most of them short-lived.
 * usage: bignum [steps]   (default 8000000) */
#include <string.h>
#include "common.h"

typedef struct {
    size_t n;
    uint32_t limb[];
} num;

static num *make(size_t n) {
    num *x = must(malloc(sizeof(num) + n * sizeof(uint32_t)));
    x->n = n;
    return x;
}

static num *from_u32(uint32_t v) {
    num *x = make(1);
    x->limb[0] = v;
    return x;
}

static num *add(const num *a, const num *b) {
    size_t n = (a->n > b->n ? a->n : b->n) + 1;
    num *r = make(n);
    uint64_t carry = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t s = carry + (i < a->n ? a->limb[i] : 0) + (i < b->n ? b->limb[i] : 0);
        r->limb[i] = (uint32_t)s;
        carry = s >> 32;
    }
    while (r->n > 1 && r->limb[r->n - 1] == 0) r->n--;
    return r;
}

static num *mul_small(const num *a, uint32_t m) {
    num *r = make(a->n + 1);
    uint64_t carry = 0;
    for (size_t i = 0; i < a->n; i++) {
        uint64_t p = (uint64_t)a->limb[i] * m + carry;
        r->limb[i] = (uint32_t)p;
        carry = p >> 32;
    }
    r->limb[a->n] = (uint32_t)carry;
    if (r->n > 1 && r->limb[r->n - 1] == 0) r->n--;
    return r;
}

/* Keeps numbers bounded: drops the high limbs past `max`. */
static num *truncated(num *a, size_t max) {
    if (a->n <= max) return a;
    num *r = make(max);
    memcpy(r->limb, a->limb, max * sizeof(uint32_t));
    free(a);
    return r;
}

int main(int argc, char **argv) {
    long steps = size_arg(argc, argv, 8000000);
    enum { TABLE = 4096 };
    num *table[TABLE];
    uint64_t rng = 2;
    for (int i = 0; i < TABLE; i++) table[i] = from_u32((uint32_t)next_u64(&rng));
    for (long s = 0; s < steps; s++) {
        size_t i = below(&rng, TABLE), j = below(&rng, TABLE), k = below(&rng, TABLE);
        num *t = add(table[i], table[j]);
        num *u = mul_small(t, (uint32_t)next_u64(&rng) | 1);
        free(t);
        free(table[k]);
        table[k] = truncated(u, 1 + below(&rng, 64));
    }
    uint64_t check = 0;
    for (int i = 0; i < TABLE; i++) {
        for (size_t l = 0; l < table[i]->n; l++) check = check * 31 + table[i]->limb[l];
        free(table[i]);
    }
    printf("bignum %ld %llu\n", steps, (unsigned long long)check);
    return 0;
}
