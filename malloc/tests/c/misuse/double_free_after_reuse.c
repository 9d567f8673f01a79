/* free of a stale pointer whose block was handed out again and freed by its new owner */
#include "misuse.h"
int main(void) {
    char *p = get(40);
    release(p);
    char *q = get(40);
    if (q != p) printf("note: the block was not reused (%p, %p)\n", (void *)p, (void *)q);
    release(q);
    expect(p);
    release(p);
    return unnoticed();
}
