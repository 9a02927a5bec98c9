/* store.c — picks the store backend from the configuration, and the checks both backends
 * run before touching the database.
 *
 * Owns: the DB_HOST => MariaDB / else SQLite decision, move validation.  Must not: contain
 * SQL (each backend owns its own) or keep state. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kg_store *store_open(const kg_config *cfg, char *err, size_t errlen)
{
    if (cfg->db_host && cfg->db_host[0])
        return store_mariadb_open(cfg, err, errlen);
    if (!cfg->sqlite_path || !cfg->sqlite_path[0]) {
        snprintf(err, errlen, "sqlite store: no KUMAGUARD_SQLITE_PATH and no DB_HOST");
        return NULL;
    }
    return store_sqlite_open(cfg->sqlite_path, err, errlen);
}

/* An index is usable when it is -1 (NULL) or names an interned node. */
static bool index_ok(const kg_nametab *tab, int32_t i, bool allow_null)
{
    return (allow_null && i == -1) || (i >= 0 && i < tab->n);
}

int store_check_moves(const kg_nametab *tab, const plan_move *moves, size_t n, char *err,
                      size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const plan_move *mv = &moves[i];
        bool needs_target = mv->kind != MOVE_CLEAR_OVERRIDE;
        /* an inactive monitor is only ever relieved of our override, never given a node */
        bool active_ok = mv->expect_active == 1 || (mv->expect_active == 0 && !needs_target);
        if (mv->kind > MOVE_SET_HOME || !index_ok(tab, mv->expect_home, true)
            || !index_ok(tab, mv->expect_over, true) || !active_ok
            || (needs_target && !index_ok(tab, mv->to, false))) {
            snprintf(err, errlen,
                     "store: invalid move for monitor %lld (kind %d, to %d, expect %d/%d,"
                     " active %d)", (long long)mv->monitor_id, mv->kind, mv->to,
                     mv->expect_home, mv->expect_over, mv->expect_active);
            return STORE_ERROR;
        }
    }
    return STORE_OK;
}

void store_close(kg_store *s)
{
    if (s)
        s->ops->close(s);
}

void store_free_monitors(store_monitor_set *m)
{
    if (!m)
        return;
    free(m->monitors);
    m->monitors = NULL;
    m->n = 0;
}

void store_free_page(store_monitor_page *p)
{
    if (!p)
        return;
    free(p->rows);
    p->rows = NULL;
    p->n = 0;
}

static bool same_value(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool store_change_writes_row(const store_monitor_change *c)
{
    return !same_value(c->new_home, c->expect_home) || !same_value(c->new_over, c->expect_over);
}

void store_page_take(store_monitor_page *out, store_monitor_row *rows, size_t n, int limit)
{
    out->more = n > (size_t)limit;
    out->n = out->more ? (size_t)limit : n;
    out->rows = rows;
}
