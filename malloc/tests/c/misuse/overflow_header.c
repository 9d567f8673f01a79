/* a write past the end of one block overwrites the next block's header; freeing that block
 * is refused, and the report names the damaged header (the 8 bytes before the block) */
#include "misuse.h"
int main(void) {
    char *a = get(24), *b = get(24);
    if (b != a + 32) printf("note: the blocks are not neighbours (%p, %p)\n", (void *)a, (void *)b);
    memset(a, 0x41, (size_t)(b - a));
    expect(b - 8);
    release(b);
    return unnoticed();
}
