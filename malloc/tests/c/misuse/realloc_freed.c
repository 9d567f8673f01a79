/* realloc of a block that was freed */
#include "misuse.h"
int main(void) {
    char *p = get(40);
    release(p);
    expect(p);
    p = resize(p, 400);
    return unnoticed();
}
