/* free of a block that is already free */
#include "misuse.h"
int main(void) {
    char *p = get(40);
    release(p);
    expect(p);
    release(p);
    return unnoticed();
}
