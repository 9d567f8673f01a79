/* free of a large (mapped) block that is already free */
#include "misuse.h"
int main(void) {
    char *p = get(4 << 20);
    memset(p, 1, 4 << 20);
    release(p);
    expect(p);
    release(p);
    return unnoticed();
}
