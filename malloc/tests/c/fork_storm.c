/* Threads allocate and free without pause while the main thread forks again and again; every
 * child allocates in each size range and exits. A child that inherits an allocator lock held
 * by a thread that does not exist in it hangs: the parent gives each child a deadline, kills
 * it when it passes, and counts it.
 *
 * usage: fork_storm [forks] [threads]      exit status 0 iff every child exited 0 in time */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Present when strata-malloc is preloaded (weak: NULL under glibc). */
extern int strata_malloc_check(void) __attribute__((weak));

static atomic_int stop;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    void *slots[256] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        seed = seed * 1103515245u + 12345u;
        unsigned i = (seed >> 8) % 256;
        free(slots[i]);
        size_t size = (seed >> 16) % 8 == 0 ? 200000 : 16 + (seed >> 12) % 3000;
        slots[i] = malloc(size);
        if (slots[i]) memset(slots[i], (int)i, size < 64 ? size : 64);
    }
    for (int i = 0; i < 256; i++) free(slots[i]);
    return NULL;
}

/* The full integrity check reads the whole large-block table, whose pages a child faults in
 * afresh: it runs in every 20th child only. */
static void child(int f) {
    char *small[1000];
    for (int i = 0; i < 1000; i++) {
        small[i] = malloc(16 + i % 500);
        if (!small[i]) _exit(2);
        memset(small[i], i, 16);
    }
    char *big = malloc(1 << 20);
    void *aligned = NULL;
    if (!big || posix_memalign(&aligned, 1 << 16, 100) != 0) _exit(2);
    big = realloc(big, 3 << 20);
    if (!big) _exit(2);
    for (int i = 0; i < 1000; i++) free(small[i]);
    free(big);
    free(aligned);
    if (f % 20 == 0 && strata_malloc_check && strata_malloc_check() != 0) _exit(3);
    _exit(0);
}

/* Waits for `pid` for at most `ms` milliseconds; -1 (after killing it) if it did not end. */
static int wait_child(pid_t pid, int ms) {
    struct timespec pause = {0, 200 * 1000};
    for (long waited_us = 0; waited_us < ms * 1000L; waited_us += 200) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        nanosleep(&pause, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 300;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    pthread_t tids[64];
    if (threads > 64) threads = 64;
    for (int t = 0; t < threads; t++) pthread_create(&tids[t], NULL, churn, (void *)(size_t)(t + 1));
    int hung = 0, failed = 0;
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) child(f);
        int status = wait_child(pid, 10000);
        if (status == -1)
            hung++;
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    printf("forks %d hung %d failed %d\n", forks, hung, failed);
    return hung || failed;
}
