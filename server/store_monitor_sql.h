/* store_monitor_sql.h — the SQL of the per-monitor listing (store.h query_monitors), built
 * once for both backends: the WHERE clause follows the filters of a store_monitor_query and
 * every value a client chose becomes a `?` parameter with its bind value listed in order, so
 * no client byte is ever part of the SQL text.  Only two expressions differ between SQLite and
 * MariaDB; the backend passes them in a sql_dialect.
 *
 * Internal to store_sqlite.c and store_mariadb.c.  Owns: that SQL text.  Must not: run SQL or
 * know a connection. */
#ifndef KG_STORE_MONITOR_SQL_H
#define KG_STORE_MONITOR_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct {
    /* boolean: the override of row m is kumaguard's (o = its kumaguard_override record) */
    const char *ours_expr;
    /* o.created_at as whole Unix seconds (NULL when there is no record) */
    const char *since_expr;
} sql_dialect;

typedef struct {
    bool is_text;
    const char *text;        /* points into the query or into sql_query.owned */
    int64_t num;
} sql_bind;

typedef struct {
    char *sql;               /* NUL-terminated */
    size_t len, cap;
    sql_bind *binds;
    int n_binds, cap_binds;
    char *like_pattern;      /* the escaped LIKE pattern the binds point at */
    bool failed;             /* out of memory somewhere: do not run */
} sql_query;

/* Columns of the row query, in this order: id, name, active (0/1), node_id, assigned_node,
 * ours (0/1), override reason, override since (Unix seconds). */
#define STORE_SQL_MONITOR_COLUMNS 8

/* Builds the page query (count = false: ORDER BY id LIMIT limit + 1, after after_id) or the
 * total count (count = true: one row, one column; after_id and limit ignored).  Returns 0, or
 * -1 when out of memory or when the query is invalid (limit outside 1..1000, more than 1000
 * ids or 256 live nodes) with a message in err. */
int store_sql_monitor_query(const store_monitor_query *q, const sql_dialect *d, bool count,
                            sql_query *out, char *err, size_t errlen);
void store_sql_free(sql_query *out);

#endif
