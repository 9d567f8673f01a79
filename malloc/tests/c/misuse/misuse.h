/* Shared by the misuse programs. Every call goes through a volatile function pointer, so the
 * compiler can neither remove a malloc/free pair whose pointer does not escape nor reason
 * about a bad pointer; each program prints the address the abort line must name, then
 * commits its misuse. Reaching the end of main means the misuse went unnoticed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*volatile get)(size_t) = malloc;
static void (*volatile release)(void *) = free;
static void *(*volatile resize)(void *, size_t) = realloc;

static void expect(const void *p) {
    printf("expect %p\n", p);
    fflush(stdout);
}

static int unnoticed(void) {
    puts("the misuse went unnoticed");
    return 0;
}
