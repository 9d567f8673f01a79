/* C23 free_sized with more bytes than the block was allocated with */
#include "misuse.h"
/* Weak: glibc before 2.39 has no free_sized; strata-malloc, preloaded, provides it. */
extern void free_sized(void *, size_t) __attribute__((weak));
int main(void) {
    if (!free_sized) {
        puts("free_sized is not available");
        return 77;
    }
    void (*volatile release_sized)(void *, size_t) = free_sized;
    char *p = get(40);
    expect(p);
    release_sized(p, 4000);
    return unnoticed();
}
