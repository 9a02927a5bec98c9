/* nametab.h — interning of node ids: maps a node_id string to a small index and back, so the
 * planner works on integers and 1,000,000 monitors cost 24 bytes each instead of two strings.
 *
 * Owns: its strings and hash table.  Must not: know anything about nodes beyond their id. */
#ifndef KG_NAMETAB_H
#define KG_NAMETAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char **names;
    int n;
    int cap;
    int32_t *slots;   /* open addressing: index+1, 0 = empty */
    size_t n_slots;
} kg_nametab;

void nametab_init(kg_nametab *t);
void nametab_free(kg_nametab *t);
/* Index of name, adding it when absent.  -1 on allocation failure. */
int32_t nametab_intern(kg_nametab *t, const char *name, size_t len);
/* Makes dst an independent copy of src (same names, same indexes).  -1 on allocation failure
 * (dst is then empty). */
int nametab_copy(kg_nametab *dst, const kg_nametab *src);
/* Index of name or -1 when absent. */
int32_t nametab_find(const kg_nametab *t, const char *name, size_t len);
static inline const char *nametab_name(const kg_nametab *t, int32_t i)
{
    return (i >= 0 && i < t->n) ? t->names[i] : NULL;
}

#endif
