/*
 * idmap.c — monitor id -> count hash map (see idmap.h).
 *
 * Owns: its slot array.  Must not: lock, log, or know what the counts mean.
 */
#include "idmap.h"

#include <stdlib.h>
#include <string.h>

static size_t slot_of(int64_t key, size_t cap)
{
	uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull; /* Fibonacci hashing */

	return (size_t)(h >> 32) & (cap - 1);
}

static bool grow(struct idmap *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 16;
	struct idmap_slot *ns = calloc(ncap, sizeof(*ns));

	if (ns == NULL)
		return false;
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].key == 0)
			continue;
		size_t j = slot_of(m->slots[i].key, ncap);
		while (ns[j].key != 0)
			j = (j + 1) & (ncap - 1);
		ns[j] = m->slots[i];
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
	return true;
}

/* Index of key, or of the empty slot where it would go; cap must be > 0. */
static size_t find(const struct idmap *m, int64_t key)
{
	size_t i = slot_of(key, m->cap);

	while (m->slots[i].key != 0 && m->slots[i].key != key)
		i = (i + 1) & (m->cap - 1);
	return i;
}

uint32_t idmap_get(const struct idmap *m, int64_t key)
{
	if (m->cap == 0 || key <= 0)
		return 0;
	return m->slots[find(m, key)].val;
}

static void erase_at(struct idmap *m, size_t i)
{
	size_t j = i;

	m->slots[i].key = 0;
	m->slots[i].val = 0;
	m->len--;
	/* Backward shift: pull later members of the chain into the hole when their home slot
	 * does not lie cyclically in (i, j]. */
	for (;;) {
		j = (j + 1) & (m->cap - 1);
		if (m->slots[j].key == 0)
			return;
		size_t home = slot_of(m->slots[j].key, m->cap);
		bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
		if (stays)
			continue;
		m->slots[i] = m->slots[j];
		m->slots[j].key = 0;
		m->slots[j].val = 0;
		i = j;
	}
}

bool idmap_set(struct idmap *m, int64_t key, uint32_t val)
{
	size_t i;

	if (key <= 0)
		return true;
	if (val == 0) {
		if (m->cap == 0)
			return true;
		i = find(m, key);
		if (m->slots[i].key == key)
			erase_at(m, i);
		return true;
	}
	if ((m->len + 1) * 4 > m->cap * 3 && !grow(m)) /* keep the load under 3/4 */
		return false;
	i = find(m, key);
	if (m->slots[i].key == 0) {
		m->slots[i].key = key;
		m->len++;
	}
	m->slots[i].val = val;
	return true;
}

bool idmap_add(struct idmap *m, int64_t key, uint32_t delta)
{
	return idmap_set(m, key, idmap_get(m, key) + delta);
}

void idmap_clear(struct idmap *m)
{
	if (m->cap != 0)
		memset(m->slots, 0, m->cap * sizeof(*m->slots));
	m->len = 0;
}

void idmap_free(struct idmap *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->len = 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

int64_t *idmap_sorted_keys(const struct idmap *m, size_t *n)
{
	int64_t *out;
	size_t k = 0;

	*n = 0;
	if (m->len == 0)
		return NULL;
	out = malloc(m->len * sizeof(*out));
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key != 0)
			out[k++] = m->slots[i].key;
	qsort(out, k, sizeof(*out), cmp_i64);
	*n = k;
	return out;
}
