/* store_monitor_sql.c — builds the parameterised SQL of the per-monitor listing (see
 * store_monitor_sql.h).  Owns: that SQL text.  Must not: run it. */
#include "store_monitor_sql.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDS 1000
#define MAX_LIVE 10000 /* live nodes in a live/not-live filter (an IN list) */
#define LIKE_ESCAPE '!' /* one character both SQLite and MariaDB accept in ESCAPE '...' */

static void put(sql_query *q, const char *s)
{
    size_t n = strlen(s);
    if (q->failed)
        return;
    if (q->len + n + 1 > q->cap) {
        size_t cap = q->cap ? q->cap : 1024;
        while (cap < q->len + n + 1)
            cap *= 2;
        char *p = realloc(q->sql, cap);
        if (!p) {
            q->failed = true;
            return;
        }
        q->sql = p;
        q->cap = cap;
    }
    memcpy(q->sql + q->len, s, n + 1);
    q->len += n;
}

static sql_bind *new_bind(sql_query *q)
{
    if (q->failed)
        return NULL;
    if (q->n_binds == q->cap_binds) {
        int cap = q->cap_binds ? q->cap_binds * 2 : 16;
        sql_bind *b = realloc(q->binds, (size_t)cap * sizeof *b);
        if (!b) {
            q->failed = true;
            return NULL;
        }
        q->binds = b;
        q->cap_binds = cap;
    }
    sql_bind *b = &q->binds[q->n_binds++];
    memset(b, 0, sizeof *b);
    return b;
}

/* Appends a fragment whose single `?` takes a text value. */
static void cond_text(sql_query *q, const char *fragment, const char *value)
{
    put(q, fragment);
    sql_bind *b = new_bind(q);
    if (b) {
        b->is_text = true;
        b->text = value;
    }
}

static void bind_num(sql_query *q, int64_t v)
{
    sql_bind *b = new_bind(q);
    if (b)
        b->num = v;
}

/* "(?, ?, ?)" for n values. */
static void placeholders(sql_query *q, size_t n)
{
    put(q, "(");
    for (size_t i = 0; i < n; i++)
        put(q, i ? ", ?" : "?");
    put(q, ")");
}

static bool all_digits(const char *s)
{
    if (!*s || strlen(s) > 18)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* "%<s with ! % _ escaped by !>%" */
static char *like_contains(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(2 * n + 3);
    if (!p)
        return NULL;
    size_t o = 0;
    p[o++] = '%';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' || s[i] == '_' || s[i] == LIKE_ESCAPE)
            p[o++] = LIKE_ESCAPE;
        p[o++] = s[i];
    }
    p[o++] = '%';
    p[o] = '\0';
    return p;
}

#define EFFECTIVE "COALESCE(m.assigned_node, m.node_id)"

static void where_clause(const store_monitor_query *q, const sql_dialect *d, bool count,
                         sql_query *out)
{
    char frag[512];
    put(out, " WHERE 1 = 1");
    if (q->ids && q->n_ids == 0) {
        put(out, " AND 1 = 0");
    } else if (q->ids) {
        put(out, " AND m.id IN ");
        placeholders(out, q->n_ids);
        for (size_t i = 0; i < q->n_ids; i++)
            bind_num(out, q->ids[i]);
    }
    if (q->node)
        cond_text(out, " AND " EFFECTIVE " = ?", q->node);
    if (q->home)
        cond_text(out, " AND m.node_id = ?", q->home);
    if (q->search && *q->search) {
        out->like_pattern = like_contains(q->search);
        if (!out->like_pattern) {
            out->failed = true;
            return;
        }
        cond_text(out, " AND (m.name LIKE ? ESCAPE '!'", out->like_pattern);
        if (all_digits(q->search)) {
            put(out, " OR m.id = ?");
            bind_num(out, strtoll(q->search, NULL, 10));
        }
        put(out, ")");
    }
    if (q->active == 1)
        put(out, " AND COALESCE(m.active = 1, 0) = 1");
    else if (q->active == 0)
        put(out, " AND COALESCE(m.active = 1, 0) = 0");
    switch (q->override) {
    case STORE_OVR_ANY: break;
    case STORE_OVR_NONE: put(out, " AND m.assigned_node IS NULL"); break;
    case STORE_OVR_OURS:
        snprintf(frag, sizeof frag, " AND %s", d->ours_expr);
        put(out, frag);
        break;
    case STORE_OVR_PIN:
        snprintf(frag, sizeof frag, " AND m.assigned_node IS NOT NULL AND NOT %s", d->ours_expr);
        put(out, frag);
        break;
    case STORE_OVR_NOT_PIN:
        snprintf(frag, sizeof frag, " AND (m.assigned_node IS NULL OR %s)", d->ours_expr);
        put(out, frag);
        break;
    }
    if (q->live == 1) {
        if (q->n_live == 0) {
            put(out, " AND 1 = 0");
        } else {
            put(out, " AND " EFFECTIVE " IN ");
            placeholders(out, q->n_live);
        }
    } else if (q->live == 0) {
        put(out, " AND " EFFECTIVE " IS NOT NULL");
        if (q->n_live > 0) {
            put(out, " AND " EFFECTIVE " NOT IN ");
            placeholders(out, q->n_live);
        }
    }
    if (q->live == 0 || q->live == 1)
        for (size_t i = 0; i < q->n_live; i++) {
            sql_bind *b = new_bind(out);
            if (b) {
                b->is_text = true;
                b->text = q->live_nodes[i];
            }
        }
    if (q->unassigned)
        put(out, " AND m.node_id IS NULL AND m.assigned_node IS NULL");
    if (!count && q->after_id > 0) {
        put(out, " AND m.id > ?");
        bind_num(out, q->after_id);
    }
}

int store_sql_monitor_query(const store_monitor_query *q, const sql_dialect *d, bool count,
                            sql_query *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!count && (q->limit < 1 || q->limit > 1000)) {
        snprintf(err, errlen, "store: monitor query limit %d outside 1..1000", q->limit);
        return -1;
    }
    /* the live-node list only matters when the live filter is asked for */
    bool live_filter = q->live == 0 || q->live == 1;
    if ((q->ids && q->n_ids > MAX_IDS) || (live_filter && q->n_live > MAX_LIVE)) {
        snprintf(err, errlen, "store: monitor query with too many ids or nodes");
        return -1;
    }
    char head[768];
    if (count)
        snprintf(head, sizeof head, "SELECT COUNT(*) FROM monitor m");
    else
        snprintf(head, sizeof head,
                 "SELECT m.id, m.name, COALESCE(m.active = 1, 0), m.node_id, m.assigned_node,"
                 " CASE WHEN %s THEN 1 ELSE 0 END, o.reason, %s FROM monitor m",
                 d->ours_expr, d->since_expr);
    put(out, head);
    put(out, " LEFT JOIN kumaguard_override o ON o.monitor_id = m.id");
    where_clause(q, d, count, out);
    if (!count) {
        put(out, " ORDER BY m.id LIMIT ?");
        bind_num(out, (int64_t)q->limit + 1); /* one more row tells whether a page follows */
    }
    if (out->failed) {
        store_sql_free(out);
        snprintf(err, errlen, "store: monitor query: out of memory");
        return -1;
    }
    return 0;
}

void store_sql_free(sql_query *out)
{
    free(out->sql);
    free(out->binds);
    free(out->like_pattern);
    memset(out, 0, sizeof *out);
}
