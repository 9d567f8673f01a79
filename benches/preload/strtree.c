/* (1) String/tree builder, single-threaded: an unbalanced binary search tree of short
 * malloc'd strings, built, searched, partly deleted and rebuilt, then torn down. Nodes and
 * keys are small blocks of mixed sizes allocated and freed in tree order.
 * usage: strtree [keys]   (default 300000) */
#include <string.h>
#include "common.h"

struct node {
    struct node *left, *right;
    char *key;
    size_t hits;
};

static struct node *insert(struct node *t, char *key) {
    struct node **at = &t;
    while (*at) {
        int c = strcmp(key, (*at)->key);
        if (c == 0) {
            (*at)->hits++;
            free(key);
            return t;
        }
        at = c < 0 ? &(*at)->left : &(*at)->right;
    }
    *at = must(calloc(1, sizeof **at));
    (*at)->key = key;
    return t;
}

static struct node *remove_min(struct node *t, struct node **min) {
    if (!t->left) {
        *min = t;
        return t->right;
    }
    t->left = remove_min(t->left, min);
    return t;
}

static struct node *erase(struct node *t, const char *key) {
    struct node **at = &t;
    while (*at) {
        int c = strcmp(key, (*at)->key);
        if (c == 0) break;
        at = c < 0 ? &(*at)->left : &(*at)->right;
    }
    struct node *victim = *at;
    if (!victim) return t;
    if (!victim->left || !victim->right) {
        *at = victim->left ? victim->left : victim->right;
    } else {
        struct node *min;
        victim->right = remove_min(victim->right, &min);
        min->left = victim->left;
        min->right = victim->right;
        *at = min;
    }
    free(victim->key);
    free(victim);
    return t;
}

static size_t sum(const struct node *t) {
    size_t s = 0;
    while (t) {
        s += strlen(t->key) + t->hits + sum(t->right);
        t = t->left;
    }
    return s;
}

static void destroy(struct node *t) {
    while (t) {
        struct node *left = t->left;
        destroy(t->right);
        free(t->key);
        free(t);
        t = left;
    }
}

static char *make_key(uint64_t *rng, long universe) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "key-%lu-%.*s", (unsigned long)below(rng, (size_t)universe),
                     (int)below(rng, 24), "abcdefghijklmnopqrstuvwxyz");
    char *k = must(malloc((size_t)n + 1));
    memcpy(k, buf, (size_t)n + 1);
    return k;
}

int main(int argc, char **argv) {
    long keys = size_arg(argc, argv, 300000);
    uint64_t rng = 1;
    struct node *t = NULL;
    for (long i = 0; i < keys; i++) t = insert(t, make_key(&rng, keys));
    size_t before = sum(t);
    for (long i = 0; i < keys / 2; i++) {
        char *k = make_key(&rng, keys);
        t = erase(t, k);
        free(k);
        t = insert(t, make_key(&rng, keys));
    }
    printf("strtree %ld %zu %zu\n", keys, before, sum(t));
    destroy(t);
    return 0;
}
