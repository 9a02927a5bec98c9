/*
 * idmap.h — a small hash map from monitor id (int64 > 0) to a count, used for a simulated
 * node's list of running monitors and for its leaked copies.
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones), so a map
 * that sees many starts and stops keeps short probe chains.  Not thread-safe: the caller
 * holds the model lock.
 */
#ifndef KUMASIM_IDMAP_H
#define KUMASIM_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct idmap_slot {
	int64_t key;      /* 0 = empty; monitor ids are AUTO_INCREMENT, so always >= 1 */
	uint32_t val;
};

struct idmap {
	struct idmap_slot *slots;
	size_t cap;       /* 0 or a power of two */
	size_t len;
};

/* Value of key, 0 when absent. */
uint32_t idmap_get(const struct idmap *m, int64_t key);
/* Sets key to val (val 0 deletes).  Returns false only when memory ran out. */
bool idmap_set(struct idmap *m, int64_t key, uint32_t val);
/* Adds delta to the value of key (creating it).  Returns false only when memory ran out. */
bool idmap_add(struct idmap *m, int64_t key, uint32_t delta);
void idmap_clear(struct idmap *m);
void idmap_free(struct idmap *m);
/* Copies the keys, sorted ascending, into a new array of m->len entries (NULL when empty or
 * out of memory; *n says how many). */
int64_t *idmap_sorted_keys(const struct idmap *m, size_t *n);

#endif
