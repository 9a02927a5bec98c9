/* nametab.c — interning of node ids (see nametab.h).
 *
 * Owns: a copy of every interned name and an open-addressing hash table of their indexes.
 * Must not: know what a node is, allocate on lookups, or ever renumber a name (indexes are
 * handed out to plan_monitor rows and must stay valid for the table's lifetime).
 *
 * A name is the bytes up to its first NUL or `len`, whichever comes first, so a lookup with
 * an explicit length (a database column) and one with strlen agree. */
#include "nametab.h"

#include <stdlib.h>
#include <string.h>

/* FNV-1a: short ids, a handful to a few thousand of them; good enough and branch-free. */
static uint32_t name_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static int name_equals(const char *stored, const char *name, size_t len)
{
    return strncmp(stored, name, len) == 0 && stored[len] == '\0';
}

void nametab_init(kg_nametab *t)
{
    memset(t, 0, sizeof(*t));
}

void nametab_free(kg_nametab *t)
{
    for (int i = 0; i < t->n; i++)
        free(t->names[i]);
    free(t->names);
    free(t->slots);
    nametab_init(t);
}

/* Slot holding `name`, or the empty slot where it would go.  n_slots is a power of two and
 * never more than half full, so the probe always ends. */
static size_t find_slot(const kg_nametab *t, const char *name, size_t len)
{
    size_t mask = t->n_slots - 1;
    size_t i = name_hash(name, len) & mask;
    while (t->slots[i] != 0) {
        if (name_equals(t->names[t->slots[i] - 1], name, len))
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static int grow_slots(kg_nametab *t)
{
    size_t n_slots = t->n_slots ? t->n_slots * 2 : 64;
    int32_t *slots = calloc(n_slots, sizeof(*slots));
    if (!slots)
        return -1;
    free(t->slots);
    t->slots = slots;
    t->n_slots = n_slots;
    for (int i = 0; i < t->n; i++) {
        size_t len = strlen(t->names[i]);
        t->slots[find_slot(t, t->names[i], len)] = i + 1;
    }
    return 0;
}

int32_t nametab_find(const kg_nametab *t, const char *name, size_t len)
{
    if (!name || t->n_slots == 0)
        return -1;
    len = strnlen(name, len);
    int32_t v = t->slots[find_slot(t, name, len)];
    return v - 1;
}

int32_t nametab_intern(kg_nametab *t, const char *name, size_t len)
{
    if (!name)
        return -1;
    len = strnlen(name, len);
    if (t->n_slots > 0) {
        size_t slot = find_slot(t, name, len);
        if (t->slots[slot] != 0)
            return t->slots[slot] - 1;
    }
    if (t->n == INT32_MAX - 1)
        return -1;
    if ((size_t)(t->n + 1) * 2 > t->n_slots && grow_slots(t) != 0)
        return -1;
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        char **names = realloc(t->names, (size_t)cap * sizeof(*names));
        if (!names)
            return -1;
        t->names = names;
        t->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, name, len);
    copy[len] = '\0';
    t->names[t->n] = copy;
    t->slots[find_slot(t, copy, len)] = t->n + 1;
    return t->n++;
}

int nametab_copy(kg_nametab *dst, const kg_nametab *src)
{
    nametab_init(dst);
    for (int i = 0; i < src->n; i++) {
        if (nametab_intern(dst, src->names[i], strlen(src->names[i])) != i) {
            nametab_free(dst);
            return -1;
        }
    }
    return 0;
}
