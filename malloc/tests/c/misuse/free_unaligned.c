/* free of a pointer one byte past the start of a live block */
#include "misuse.h"
int main(void) {
    char *p = get(200);
    char *off = p + 1;
    expect(off);
    release(off);
    return unnoticed();
}
