/* The malloc family's C semantics, checked from C: the same program must pass under glibc
 * and under strata-malloc. A constructor allocates before main, as real programs do.
 *
 * usage: semantics        prints "semantics ok" and exits 0, or names the first failure */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Present when strata-malloc is preloaded (weak: NULL under glibc). */
extern int strata_malloc_check(void) __attribute__((weak));

static char *early;

__attribute__((constructor)) static void before_main(void) {
    early = malloc(100);
    if (early) strcpy(early, "allocated in a constructor");
}

/* Calls through volatile pointers: the compiler may not remove or fold the allocations. */
static void *(*volatile do_malloc)(size_t) = malloc;
static void *(*volatile do_calloc)(size_t, size_t) = calloc;
static void *(*volatile do_realloc)(void *, size_t) = realloc;
static void *(*volatile do_memalign)(size_t, size_t) = memalign;
static void *(*volatile do_reallocarray)(void *, size_t, size_t) = reallocarray;

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "semantics: line %d: %s\n", __LINE__, #cond); \
            return 1;                                                     \
        }                                                                 \
    } while (0)

int main(void) {
    CHECK(early && strcmp(early, "allocated in a constructor") == 0);
    free(early);

    void *a = do_malloc(0), *b = do_malloc(0);
    CHECK(a && b && a != b);
    free(a);
    free(b);
    free(NULL);
    CHECK((uintptr_t)do_malloc(1) % 16 == 0);

    errno = 0;
    CHECK(do_malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(do_calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);

    char *p = do_realloc(NULL, 10);
    CHECK(p);
    memcpy(p, "0123456789", 10);
    size_t sizes[] = {100, 5000, 300000, 8000000, 20};
    for (int i = 0; i < 5; i++) {
        p = do_realloc(p, sizes[i]);
        CHECK(p && memcmp(p, "0123456789", 10) == 0);
        CHECK(malloc_usable_size(p) >= sizes[i]);
    }
    errno = 0;
    CHECK(do_realloc(p, SIZE_MAX / 2) == NULL && errno == ENOMEM);
    CHECK(memcmp(p, "0123456789", 10) == 0);
    errno = 0;
    CHECK(do_reallocarray(p, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(do_realloc(p, 0) == NULL && errno == 0);

    void *out = NULL;
    size_t bad[] = {0, 1, 2, 4, 24, 100};
    for (int i = 0; i < 6; i++) CHECK(posix_memalign(&out, bad[i], 10) == EINVAL && out == NULL);
    for (size_t align = 8; align <= ((size_t)1 << 26); align <<= 1) {
        CHECK(posix_memalign(&out, align, 100) == 0 && (uintptr_t)out % align == 0);
        memset(out, 1, 100);
        free(out);
        void *q = aligned_alloc(align, 3 * align);
        CHECK(q && (uintptr_t)q % align == 0);
        free(q);
    }
    void *m = do_memalign(64, 1000);
    CHECK(m && (uintptr_t)m % 64 == 0);
    free(m);
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(10), *pv = pvalloc(10);
    CHECK(v && pv && (uintptr_t)v % page == 0 && (uintptr_t)pv % page == 0);
    CHECK(malloc_usable_size(pv) >= (size_t)page);
    free(v);
    free(pv);
    CHECK(malloc_usable_size(NULL) == 0);

    unsigned char *z = do_malloc(4000);
    memset(z, 0xEE, 4000);
    free(z);
    z = do_calloc(40, 100);
    for (int i = 0; i < 4000; i++) CHECK(z[i] == 0);
    free(z);

    if (strata_malloc_check) CHECK(strata_malloc_check() == 0);
    puts("semantics ok");
    return 0;
}
