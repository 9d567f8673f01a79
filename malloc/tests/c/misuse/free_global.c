/* free of a pointer to a global variable */
#include "misuse.h"
static char global[64] = "a global";
int main(void) {
    char *volatile p = global;
    expect(p);
    release(p);
    return unnoticed();
}
