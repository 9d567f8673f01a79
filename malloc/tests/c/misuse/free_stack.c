/* free of a pointer to a local variable */
#include "misuse.h"
int main(void) {
    char local[64];
    char *volatile p = local;
    strcpy(local, "on the stack");
    expect(p);
    release(p);
    return unnoticed();
}
