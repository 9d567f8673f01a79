/* free of a pointer into the middle of a live block */
#include "misuse.h"
int main(void) {
    char *p = get(200);
    char *inside = p + 64;
    expect(inside);
    release(inside);
    return unnoticed();
}
