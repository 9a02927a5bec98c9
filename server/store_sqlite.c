/* store_sqlite.c — the embedded cluster store (SQLite file at KUMAGUARD_SQLITE_PATH), used
 * when no DB_HOST is configured: single-machine trials, tests, demos.
 *
 * Owns: one sqlite3 connection and all SQL for it, including the minimal Kuma-compatible
 * `node` and `monitor` tables (always created here; there is no Kuma migration to wait for).
 * Must not: decide what to move, log, or keep cluster state between calls.
 *
 * Every write runs inside BEGIN IMMEDIATE, so the database is write-locked for the whole
 * transaction: that is why apply_moves may evaluate the guard in one statement and change the
 * guarded rows in the next.  Timestamps are written in UTC (SQLite's datetime('now') is UTC).
 * There is a single controller per SQLite file, so the lease is always ours (generation as
 * stored, 1 unless someone changed it); the fence still compares against the stored value. */
#include "store.h"
#include "store_monitor_sql.h"

#include <sqlite3.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sqlite3 *db;
    char lock_path[1100];  /* <db>.lease: flock'ed by the instance that leads */
    int lock_fd;           /* -1 until the lease is held */
    /* monitors_changed: PRAGMA data_version when the monitors were last loaded.  It changes
     * whenever another connection commits; our own writes to monitor/kumaguard_override (only
     * apply_moves makes them) clear loaded_valid instead. */
    bool loaded_valid;
    int64_t loaded_version;
} sq_store;

static sqlite3 *db_of(kg_store *s)
{
    return ((sq_store *)s->impl)->db;
}

/* ---- small helpers --------------------------------------------------------------------- */

static int sq_fail(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "sqlite: %s: %s", what, db ? sqlite3_errmsg(db) : "no database");
    return STORE_ERROR;
}

static int sq_exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s", what, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return STORE_ERROR;
    }
    return STORE_OK;
}

static int sq_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *what,
                      char *err, size_t errlen)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return sq_fail(db, what, err, errlen);
    }
    return STORE_OK;
}

/* Steps a statement that returns no rows (or whose rows we ignore) to completion. */
static int sq_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, char *err,
                        size_t errlen)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        return sq_fail(db, what, err, errlen);
    return STORE_OK;
}

static int sq_run(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = sq_prepare(db, sql, &st, what, err, errlen);
    if (rc == STORE_OK)
        rc = sq_step_done(db, st, what, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

static void bind_text_or_null(sqlite3_stmt *st, int col, const char *s)
{
    if (s)
        sqlite3_bind_text(st, col, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, col);
}

static void bind_nonempty_or_null(sqlite3_stmt *st, int col, const char *s)
{
    bind_text_or_null(st, col, (s && s[0]) ? s : NULL);
}

/* Copies a column into a fixed buffer, truncating; NULL becomes "". */
static void column_copy(sqlite3_stmt *st, int col, char *dst, size_t dstlen)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    size_t len = v ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (len >= dstlen)
        len = dstlen - 1;
    if (len)
        memcpy(dst, v, len);
    dst[len] = '\0';
}

static int sq_begin(sqlite3 *db, char *err, size_t errlen)
{
    return sq_exec(db, "BEGIN IMMEDIATE", "begin transaction", err, errlen);
}

/* Commits when rc is STORE_OK, rolls back otherwise; returns the final status (err keeps the
 * first failure's message). */
static int sq_end(sqlite3 *db, int rc, char *err, size_t errlen)
{
    if (rc == STORE_OK)
        return sq_exec(db, "COMMIT", "commit", err, errlen);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int read_generation(sqlite3 *db, int64_t *gen, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = sq_prepare(db, "SELECT generation FROM kumaguard_leader WHERE id = 1", &st,
                        "read leader generation", err, errlen);
    if (rc != STORE_OK)
        return rc;
    *gen = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *gen = sqlite3_column_int64(st, 0);
    else if (step != SQLITE_DONE)
        rc = sq_fail(db, "read leader generation", err, errlen);
    sqlite3_finalize(st);
    return rc;
}

/* Inside a write transaction: STORE_FENCED when the stored generation is not ours. */
static int fence_check(kg_store *s, char *err, size_t errlen)
{
    if (s->fence_generation <= 0)
        return STORE_OK;
    int64_t gen;
    int rc = read_generation(db_of(s), &gen, err, errlen);
    if (rc != STORE_OK)
        return rc;
    if (gen != s->fence_generation) {
        snprintf(err, errlen, "fenced: leader generation is %lld, this controller holds %lld",
                 (long long)gen, (long long)s->fence_generation);
        return STORE_FENCED;
    }
    return STORE_OK;
}

/* A write transaction of one statement, fenced like every write: begins, checks the fence
 * and prepares sql into *st for the caller to bind.  Whatever it returns, the caller then
 * calls fenced_one_end, which runs the statement if all went well and commits, or rolls
 * back. */
static int fenced_one_begin(kg_store *s, const char *sql, const char *what, sqlite3_stmt **st,
                            char *err, size_t errlen)
{
    sqlite3 *db = db_of(s);
    *st = NULL;
    int rc = sq_begin(db, err, errlen);
    if (rc == STORE_OK)
        rc = fence_check(s, err, errlen);
    if (rc == STORE_OK)
        rc = sq_prepare(db, sql, st, what, err, errlen);
    return rc;
}

static int fenced_one_end(kg_store *s, sqlite3_stmt *st, int rc, const char *what, char *err,
                          size_t errlen)
{
    sqlite3 *db = db_of(s);
    if (rc == STORE_OK)
        rc = sq_step_done(db, st, what, err, errlen);
    sqlite3_finalize(st);
    return sq_end(db, rc, err, errlen); /* a failed BEGIN leaves nothing to roll back */
}

/* ---- schema ------------------------------------------------------------------------------ */

static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS node ("
    " node_id VARCHAR(50) NOT NULL PRIMARY KEY,"
    " node_name VARCHAR(100) NOT NULL,"
    " location VARCHAR(100),"
    " hostname VARCHAR(255),"
    " host VARCHAR(45),"
    " status VARCHAR(20) DEFAULT 'online',"
    " active BOOLEAN DEFAULT 1,"
    " is_primary BOOLEAN DEFAULT 0,"
    " created_date DATETIME DEFAULT CURRENT_TIMESTAMP,"
    " modified_date DATETIME DEFAULT CURRENT_TIMESTAMP,"
    " last_seen DATETIME NULL);"
    "CREATE TABLE IF NOT EXISTS monitor ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name VARCHAR(150),"
    " active BOOLEAN NOT NULL DEFAULT 1,"
    " user_id INTEGER,"
    " node_id VARCHAR(50) NULL,"
    " assigned_node VARCHAR(255) NULL);"
    "CREATE INDEX IF NOT EXISTS monitor_node_id ON monitor (node_id);"
    "CREATE INDEX IF NOT EXISTS monitor_assigned_node ON monitor (assigned_node);"
    "CREATE TABLE IF NOT EXISTS kumaguard_override ("
    " monitor_id INTEGER NOT NULL PRIMARY KEY,"
    " node_id VARCHAR(255) NOT NULL,"
    " home_node VARCHAR(50) NULL,"
    " reason VARCHAR(128),"
    " created_at DATETIME NOT NULL);"
    "CREATE TABLE IF NOT EXISTS kumaguard_event ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ts DATETIME NOT NULL,"
    " kind VARCHAR(32) NOT NULL,"
    " node VARCHAR(50),"
    " from_node VARCHAR(50),"
    " to_node VARCHAR(50),"
    " count INTEGER NOT NULL DEFAULT 0,"
    " duration_ms BIGINT NOT NULL DEFAULT 0,"
    " reason VARCHAR(192));"
    "CREATE INDEX IF NOT EXISTS kumaguard_event_ts ON kumaguard_event (ts);"
    "CREATE TABLE IF NOT EXISTS kumaguard_leader ("
    " id INTEGER NOT NULL PRIMARY KEY,"
    " holder VARCHAR(128),"
    " generation BIGINT NOT NULL DEFAULT 0,"
    " renewed_at DATETIME);";

static int sq_ensure_schema(kg_store *s, bool init_schema, char *err, size_t errlen)
{
    (void)init_schema; /* the embedded store always owns node and monitor */
    return sq_exec(db_of(s), SCHEMA_SQL, "create schema", err, errlen);
}

/* ---- nodes ------------------------------------------------------------------------------- */

static int sq_ping(kg_store *s, char *err, size_t errlen)
{
    return sq_run(db_of(s), "SELECT 1", "ping", err, errlen);
}

static int sq_load_nodes(kg_store *s, store_node_row **rows, size_t *n, char *err,
                         size_t errlen)
{
    sqlite3 *db = db_of(s);
    sqlite3_stmt *st;
    *rows = NULL;
    *n = 0;
    int rc = sq_prepare(db,
                        "SELECT node_id, node_name, host, status, COALESCE(is_primary, 0),"
                        " COALESCE(active, 1), CAST(strftime('%s', last_seen) AS INTEGER)"
                        " FROM node ORDER BY node_id",
                        &st, "load nodes", err, errlen);
    if (rc != STORE_OK)
        return rc;
    store_node_row *out = NULL;
    size_t count = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            store_node_row *grown = realloc(out, ncap * sizeof(*grown));
            if (!grown) {
                snprintf(err, errlen, "sqlite: load nodes: out of memory");
                rc = STORE_ERROR;
                break;
            }
            out = grown;
            cap = ncap;
        }
        store_node_row *r = &out[count++];
        memset(r, 0, sizeof(*r));
        column_copy(st, 0, r->id, sizeof(r->id));
        column_copy(st, 1, r->name, sizeof(r->name));
        column_copy(st, 2, r->host, sizeof(r->host));
        column_copy(st, 3, r->status, sizeof(r->status));
        r->is_primary = sqlite3_column_int(st, 4) != 0;
        r->active = sqlite3_column_int(st, 5) != 0;
        r->last_seen_ms = sqlite3_column_int64(st, 6) * 1000;
    }
    if (rc == STORE_OK && step != SQLITE_DONE)
        rc = sq_fail(db, "load nodes", err, errlen);
    sqlite3_finalize(st);
    if (rc != STORE_OK) {
        free(out);
        return rc;
    }
    *rows = out;
    *n = count;
    return STORE_OK;
}

static int sq_upsert_node(kg_store *s, const char *id, const char *host, char *err,
                          size_t errlen)
{
    sqlite3_stmt *st;
    int rc = fenced_one_begin(s,
                              "INSERT INTO node (node_id, node_name, host, status, created_date,"
                              " modified_date) VALUES (?1, ?1, ?2, 'online', datetime('now'),"
                              " datetime('now')) ON CONFLICT (node_id) DO UPDATE SET"
                              " host = excluded.host, modified_date = excluded.modified_date",
                              "upsert node", &st, err, errlen);
    if (rc == STORE_OK) {
        bind_text_or_null(st, 1, id);
        bind_text_or_null(st, 2, host);
    }
    return fenced_one_end(s, st, rc, "upsert node", err, errlen);
}

static int sq_write_node_states(kg_store *s, const store_node_state *states, size_t n,
                                char *err, size_t errlen)
{
    sqlite3 *db = db_of(s);
    int rc = sq_begin(db, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = fence_check(s, err, errlen);
    sqlite3_stmt *st = NULL;
    if (rc == STORE_OK)
        rc = sq_prepare(db,
                        "UPDATE node SET status = COALESCE(?1, status),"
                        " last_seen = CASE WHEN ?2 > 0 THEN datetime(?2 / 1000, 'unixepoch')"
                        " ELSE last_seen END, modified_date = datetime('now')"
                        " WHERE node_id = ?3",
                        &st, "write node states", err, errlen);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        sqlite3_reset(st);
        bind_text_or_null(st, 1, states[i].status);
        sqlite3_bind_int64(st, 2, states[i].last_seen_ms);
        bind_text_or_null(st, 3, states[i].id);
        rc = sq_step_done(db, st, "write node states", err, errlen);
    }
    sqlite3_finalize(st);
    return sq_end(db, rc, err, errlen);
}

/* ---- monitors ---------------------------------------------------------------------------- */

/* Interns a nullable text column: NULL -> -1, -2 on allocation failure. */
static int32_t intern_column(sqlite3_stmt *st, int col, kg_nametab *tab)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return -1;
    const char *v = (const char *)sqlite3_column_text(st, col);
    if (!v)
        return -2;
    int32_t idx = nametab_intern(tab, v, (size_t)sqlite3_column_bytes(st, col));
    return idx < 0 ? -2 : idx;
}

static int data_version(sqlite3 *db, int64_t *v, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = sq_prepare(db, "PRAGMA data_version", &st, "read data version", err, errlen);
    if (rc != STORE_OK)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    else
        rc = sq_fail(db, "read data version", err, errlen);
    sqlite3_finalize(st);
    return rc;
}

static int sq_monitors_changed(kg_store *s, bool *changed, char *err, size_t errlen)
{
    sq_store *q = s->impl;
    *changed = true;
    if (!q->loaded_valid)
        return STORE_OK;
    int64_t v = 0;
    int rc = data_version(q->db, &v, err, errlen);
    if (rc == STORE_OK)
        *changed = v != q->loaded_version;
    return rc;
}

/* A record whose override someone else changed is garbage: dropped, in a fenced write of the
 * leader, before it can match a later manual pin by accident and make that pin look like
 * ours.  (Reads never write: a stale record is simply not "ours" when monitors are loaded.) */
static int sq_forget_stale_overrides(kg_store *s, size_t *forgotten, char *err, size_t errlen)
{
    ((sq_store *)s->impl)->loaded_valid = false; /* our own write (see apply_moves) */
    *forgotten = 0;
    if (s->fence_generation <= 0) {
        snprintf(err, errlen, "forget stale override records: only the leader writes");
        return STORE_FENCED;
    }
    sqlite3_stmt *st = NULL;
    int rc = fenced_one_begin(s,
                              "DELETE FROM kumaguard_override WHERE NOT EXISTS (SELECT 1 FROM"
                              " monitor m WHERE m.id = kumaguard_override.monitor_id"
                              " AND m.assigned_node IS kumaguard_override.node_id)",
                              "forget stale override records", &st, err, errlen);
    int before = sqlite3_total_changes(db_of(s));
    rc = fenced_one_end(s, st, rc, "forget stale override records", err, errlen);
    if (rc == STORE_OK)
        *forgotten = (size_t)(sqlite3_total_changes(db_of(s)) - before);
    return rc;
}

static int sq_load_monitors(kg_store *s, kg_nametab *tab, store_monitor_set *out, char *err,
                            size_t errlen)
{
    sqlite3 *db = db_of(s);
    sq_store *q = s->impl;
    sqlite3_stmt *st;
    out->monitors = NULL;
    out->n = 0;
    q->loaded_valid = false;
    int rc = STORE_OK;
    int64_t version = 0;
    if (rc == STORE_OK) /* before the read: a commit after it shows as a change */
        rc = data_version(db, &version, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = sq_prepare(db,
                        "SELECT m.id, m.node_id, m.assigned_node, COALESCE(m.active = 1, 0),"
                        " COALESCE(o.node_id = m.assigned_node, 0)"
                        " FROM monitor m LEFT JOIN kumaguard_override o ON o.monitor_id = m.id"
                        " ORDER BY m.id",
                        &st, "load monitors", err, errlen);
    if (rc != STORE_OK)
        return rc;
    plan_monitor *mons = NULL;
    size_t count = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            plan_monitor *grown = realloc(mons, ncap * sizeof(*grown));
            if (!grown) {
                rc = STORE_ERROR;
                break;
            }
            mons = grown;
            cap = ncap;
        }
        plan_monitor *m = &mons[count++];
        m->id = sqlite3_column_int64(st, 0);
        m->home = intern_column(st, 1, tab);
        m->over = intern_column(st, 2, tab);
        m->active = (uint8_t)(sqlite3_column_int(st, 3) != 0);
        m->ours = (uint8_t)(sqlite3_column_int(st, 4) != 0);
        if (m->home == -2 || m->over == -2) {
            rc = STORE_ERROR;
            break;
        }
    }
    if (rc != STORE_OK)
        snprintf(err, errlen, "sqlite: load monitors: out of memory");
    else if (step != SQLITE_DONE)
        rc = sq_fail(db, "load monitors", err, errlen);
    sqlite3_finalize(st);
    if (rc != STORE_OK) {
        free(mons);
        return rc;
    }
    out->monitors = mons;
    out->n = count;
    q->loaded_valid = true;
    q->loaded_version = version;
    return STORE_OK;
}

static int fill_moves_table(sqlite3 *db, const kg_nametab *tab, const plan_move *moves,
                            size_t n, char *err, size_t errlen)
{
    int rc = sq_exec(db,
                     "CREATE TEMP TABLE IF NOT EXISTS kg_moves ("
                     " id INTEGER PRIMARY KEY, exp_home TEXT, exp_over TEXT, target TEXT,"
                     " kind INTEGER NOT NULL, clear_override INTEGER NOT NULL,"
                     " exp_active INTEGER NOT NULL, applied INTEGER NOT NULL DEFAULT 0);"
                     "DELETE FROM kg_moves;",
                     "create moves table", err, errlen);
    if (rc != STORE_OK)
        return rc;
    sqlite3_stmt *st;
    rc = sq_prepare(db,
                    "INSERT INTO kg_moves (id, exp_home, exp_over, target, kind,"
                    " clear_override, exp_active) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &st, "fill moves table", err, errlen);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        const plan_move *mv = &moves[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, mv->monitor_id);
        bind_text_or_null(st, 2, nametab_name(tab, mv->expect_home));
        bind_text_or_null(st, 3, nametab_name(tab, mv->expect_over));
        bind_text_or_null(st, 4, mv->kind == MOVE_CLEAR_OVERRIDE ? NULL
                                                                 : nametab_name(tab, mv->to));
        sqlite3_bind_int(st, 5, mv->kind);
        sqlite3_bind_int(st, 6, mv->clear_override ? 1 : 0);
        sqlite3_bind_int(st, 7, mv->expect_active ? 1 : 0);
        rc = sq_step_done(db, st, "fill moves table", err, errlen);
    }
    sqlite3_finalize(st);
    return rc;
}

/* The set-based apply, inside the caller's transaction.  Step 1 marks the moves whose guard
 * still holds (node_id, assigned_node and active as the plan saw them: a monitor switched off
 * meanwhile never gets an override); step 2 changes exactly those monitor rows; steps 3-5 keep
 * kumaguard_override in line with what we now own. */
static int apply_marked_moves(sqlite3 *db, const char *reason, size_t *applied, char *err,
                              size_t errlen)
{
    int rc = sq_run(db,
                    "UPDATE kg_moves SET applied = 1 WHERE EXISTS (SELECT 1 FROM monitor m"
                    " WHERE m.id = kg_moves.id AND m.node_id IS kg_moves.exp_home"
                    " AND m.assigned_node IS kg_moves.exp_over"
                    " AND COALESCE(m.active = 1, 0) = kg_moves.exp_active)",
                    "check move guards", err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = sq_run(db,
                "UPDATE monitor SET"
                " assigned_node = CASE t.kind WHEN 0 THEN t.target WHEN 1 THEN NULL"
                "  ELSE CASE WHEN t.clear_override = 1 THEN NULL ELSE monitor.assigned_node END"
                "  END,"
                " node_id = CASE WHEN t.kind = 2 THEN t.target ELSE monitor.node_id END"
                " FROM kg_moves AS t WHERE t.id = monitor.id AND t.applied = 1",
                "apply moves", err, errlen);
    if (rc != STORE_OK)
        return rc;
    *applied = (size_t)sqlite3_changes(db);
    rc = sq_run(db,
                "DELETE FROM kumaguard_override WHERE monitor_id IN (SELECT id FROM kg_moves"
                " WHERE applied = 1 AND (kind = 1 OR (kind = 2 AND clear_override = 1)))",
                "clear override records", err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = sq_run(db,
                "UPDATE kumaguard_override SET home_node = t.target FROM kg_moves AS t"
                " WHERE t.id = kumaguard_override.monitor_id AND t.applied = 1 AND t.kind = 2",
                "update override homes", err, errlen);
    if (rc != STORE_OK)
        return rc;
    sqlite3_stmt *st;
    rc = sq_prepare(db,
                    "INSERT INTO kumaguard_override (monitor_id, node_id, home_node, reason,"
                    " created_at) SELECT id, target, exp_home, ?1, datetime('now')"
                    " FROM kg_moves WHERE applied = 1 AND kind = 0"
                    " ON CONFLICT (monitor_id) DO UPDATE SET node_id = excluded.node_id,"
                    " home_node = excluded.home_node, reason = excluded.reason,"
                    " created_at = excluded.created_at",
                    &st, "record overrides", err, errlen);
    if (rc != STORE_OK)
        return rc;
    bind_text_or_null(st, 1, reason);
    rc = sq_step_done(db, st, "record overrides", err, errlen);
    sqlite3_finalize(st);
    return rc;
}

static int sq_apply_moves(kg_store *s, const kg_nametab *tab, const plan_move *moves, size_t n,
                          const char *what, store_apply_result *res, char *err, size_t errlen)
{
    sqlite3 *db = db_of(s);
    res->applied = 0;
    res->skipped = 0;
    int rc = store_check_moves(tab, moves, n, err, errlen);
    if (rc != STORE_OK || n == 0)
        return rc;
    char reason[KG_REASON_MAX];
    snprintf(reason, sizeof(reason), "%s", what ? what : "");
    rc = sq_begin(db, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = fence_check(s, err, errlen);
    if (rc == STORE_OK)
        rc = fill_moves_table(db, tab, moves, n, err, errlen);
    size_t applied = 0;
    if (rc == STORE_OK)
        rc = apply_marked_moves(db, reason, &applied, err, errlen);
    rc = sq_end(db, rc, err, errlen);
    if (rc == STORE_OK) {
        res->applied = applied;
        res->skipped = n - applied;
    }
    if (applied || rc != STORE_OK) /* our own write: data_version does not show it to us */
        ((sq_store *)s->impl)->loaded_valid = false;
    return rc;
}

/* ---- events and lease -------------------------------------------------------------------- */

static int sq_append_event(kg_store *s, const kg_event *ev, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = fenced_one_begin(s,
                              "INSERT INTO kumaguard_event (ts, kind, node, from_node, to_node,"
                              " count, duration_ms, reason) VALUES (CASE WHEN ?1 > 0 THEN"
                              " strftime('%Y-%m-%d %H:%M:%f', ?1 / 1000.0, 'unixepoch') ELSE"
                              " strftime('%Y-%m-%d %H:%M:%f', 'now') END, ?2, ?3, ?4, ?5, ?6,"
                              " ?7, ?8)",
                              "append event", &st, err, errlen);
    if (rc == STORE_OK) {
        sqlite3_bind_int64(st, 1, ev->ts_ms);
        bind_text_or_null(st, 2, event_kind_name(ev->kind));
        bind_nonempty_or_null(st, 3, ev->node);
        bind_nonempty_or_null(st, 4, ev->from);
        bind_nonempty_or_null(st, 5, ev->to);
        sqlite3_bind_int(st, 6, ev->count);
        sqlite3_bind_int64(st, 7, ev->duration_ms);
        bind_nonempty_or_null(st, 8, ev->reason);
    }
    return fenced_one_end(s, st, rc, "append event", err, errlen);
}

static int sq_prune_events(kg_store *s, int64_t before_ms, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = fenced_one_begin(s,
                              "DELETE FROM kumaguard_event WHERE id IN (SELECT id FROM"
                              " kumaguard_event WHERE ts < strftime('%Y-%m-%d %H:%M:%f',"
                              " ?1 / 1000.0, 'unixepoch') LIMIT 10000)",
                              "prune events", &st, err, errlen);
    if (rc == STORE_OK)
        sqlite3_bind_int64(st, 1, before_ms);
    return fenced_one_end(s, st, rc, "prune events", err, errlen);
}

static int sq_lease(kg_store *s, const char *instance_id, int ttl_ms, bool *leader,
                    int64_t *generation, char *err, size_t errlen)
{
    (void)ttl_ms; /* the flock lives as long as the process: nothing can take it away */
    sqlite3 *db = db_of(s);
    sq_store *q = s->impl;
    *leader = false;
    /* Two kumaguards pointed at one file must not both act: the lease is an exclusive flock
     * on a file beside the database, released by the kernel when its holder dies. */
    if (q->lock_fd < 0 && q->lock_path[0]) {
        int fd = open(q->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
            snprintf(err, errlen, "sqlite: cannot open lease file %s: %s", q->lock_path,
                     strerror(errno));
            return STORE_ERROR;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd);
            *generation = 0;
            return read_generation(db, generation, err, errlen); /* another instance leads */
        }
        q->lock_fd = fd;
    }
    int rc = sq_begin(db, err, errlen);
    if (rc != STORE_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = sq_prepare(db,
                    "INSERT INTO kumaguard_leader (id, holder, generation, renewed_at)"
                    " VALUES (1, ?1, 1, strftime('%Y-%m-%d %H:%M:%f', 'now'))"
                    " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,"
                    " renewed_at = excluded.renewed_at",
                    &st, "renew lease", err, errlen);
    if (rc == STORE_OK) {
        bind_text_or_null(st, 1, instance_id);
        rc = sq_step_done(db, st, "renew lease", err, errlen);
    }
    sqlite3_finalize(st);
    int64_t gen = 0;
    if (rc == STORE_OK)
        rc = read_generation(db, &gen, err, errlen);
    rc = sq_end(db, rc, err, errlen);
    if (rc == STORE_OK) {
        *leader = true;
        *generation = gen;
    }
    return rc;
}

static int sq_release_lease(kg_store *s, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    sq_store *q = s->impl;
    if (q->lock_fd >= 0)
        close(q->lock_fd); /* releases the flock */
    q->lock_fd = -1;
    return STORE_OK;
}

/* ---- first-run setup, per-monitor listing and operations ------------------------------ */

/* The embedded store has no Kuma `user` table: a trial cluster on it is never gated. */
static int sq_setup_status(kg_store *s, store_setup_state *st, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    *st = STORE_SETUP_NOT_GATED;
    return STORE_OK;
}

static const sql_dialect sq_dialect = {
    .ours_expr = "(o.node_id IS NOT NULL AND o.node_id = m.assigned_node)",
    .since_expr = "CAST(strftime('%s', o.created_at) AS INTEGER)",
};

static void sq_bind_query(sqlite3_stmt *st, const sql_query *q)
{
    for (int i = 0; i < q->n_binds; i++) {
        const sql_bind *b = &q->binds[i];
        if (b->is_text)
            bind_text_or_null(st, i + 1, b->text);
        else
            sqlite3_bind_int64(st, i + 1, b->num);
    }
}

/* Copies a nullable text column; returns whether it was not NULL. */
static bool column_opt(sqlite3_stmt *st, int col, char *dst, size_t dstlen)
{
    column_copy(st, col, dst, dstlen);
    return sqlite3_column_type(st, col) != SQLITE_NULL;
}

static int sq_count_monitors(sqlite3 *db, const store_monitor_query *q, int64_t *total,
                             char *err, size_t errlen)
{
    sql_query sq;
    if (store_sql_monitor_query(q, &sq_dialect, true, &sq, err, errlen) != 0)
        return STORE_ERROR;
    sqlite3_stmt *st;
    int rc = sq_prepare(db, sq.sql, &st, "count monitors", err, errlen);
    if (rc == STORE_OK) {
        sq_bind_query(st, &sq);
        if (sqlite3_step(st) == SQLITE_ROW)
            *total = sqlite3_column_int64(st, 0);
        else
            rc = sq_fail(db, "count monitors", err, errlen);
    }
    sqlite3_finalize(st);
    store_sql_free(&sq);
    return rc;
}

static int sq_query_monitors(kg_store *s, const store_monitor_query *q, store_monitor_page *out,
                             char *err, size_t errlen)
{
    sqlite3 *db = db_of(s);
    memset(out, 0, sizeof *out);
    out->total = -1;
    sql_query sq;
    if (store_sql_monitor_query(q, &sq_dialect, false, &sq, err, errlen) != 0)
        return STORE_ERROR;
    store_monitor_row *rows = calloc((size_t)q->limit + 1, sizeof *rows);
    sqlite3_stmt *st = NULL;
    int rc = rows ? sq_prepare(db, sq.sql, &st, "query monitors", err, errlen) : STORE_ERROR;
    if (!rows)
        snprintf(err, errlen, "sqlite: query monitors: out of memory");
    size_t n = 0;
    int step = SQLITE_DONE;
    if (rc == STORE_OK) {
        sq_bind_query(st, &sq);
        while ((step = sqlite3_step(st)) == SQLITE_ROW && n <= (size_t)q->limit) {
            store_monitor_row *r = &rows[n++];
            r->id = sqlite3_column_int64(st, 0);
            column_copy(st, 1, r->name, sizeof r->name);
            r->active = sqlite3_column_int(st, 2) != 0;
            r->has_home = column_opt(st, 3, r->home, sizeof r->home);
            r->has_over = column_opt(st, 4, r->over, sizeof r->over);
            r->ours = sqlite3_column_int(st, 5) != 0;
            if (r->ours) {
                column_copy(st, 6, r->over_reason, sizeof r->over_reason);
                r->over_since_ms = sqlite3_column_int64(st, 7) * 1000;
            }
        }
        if (step != SQLITE_ROW && step != SQLITE_DONE)
            rc = sq_fail(db, "query monitors", err, errlen);
    }
    sqlite3_finalize(st);
    store_sql_free(&sq);
    if (rc == STORE_OK && q->want_total)
        rc = sq_count_monitors(db, q, &out->total, err, errlen);
    if (rc != STORE_OK) {
        free(rows);
        return rc;
    }
    store_page_take(out, rows, n, q->limit);
    return STORE_OK;
}

/* One change inside the write transaction: the guard (the row still holds what the caller
 * read), the row itself when a column changes, then its override record. */
static int sq_apply_change(sqlite3 *db, sqlite3_stmt *const st[4], const store_monitor_change *c,
                           const char *reason, size_t *changed, char *err, size_t errlen)
{
    sqlite3_reset(st[0]);
    sqlite3_bind_int64(st[0], 1, c->id);
    bind_text_or_null(st[0], 2, c->expect_home);
    bind_text_or_null(st[0], 3, c->expect_over);
    int step = sqlite3_step(st[0]);
    if (step == SQLITE_DONE) {
        snprintf(err, errlen, "monitor %lld changed since it was read", (long long)c->id);
        return STORE_CONFLICT;
    }
    if (step != SQLITE_ROW)
        return sq_fail(db, "check monitor", err, errlen);
    if (store_change_writes_row(c)) {
        sqlite3_reset(st[1]);
        bind_text_or_null(st[1], 1, c->new_home);
        bind_text_or_null(st[1], 2, c->new_over);
        sqlite3_bind_int64(st[1], 3, c->id);
        if (sq_step_done(db, st[1], "change monitor", err, errlen) != STORE_OK)
            return STORE_ERROR;
        (*changed)++;
    }
    if (c->record == STORE_RECORD_DELETE) {
        sqlite3_reset(st[2]);
        sqlite3_bind_int64(st[2], 1, c->id);
        return sq_step_done(db, st[2], "forget override record", err, errlen);
    }
    if (c->record == STORE_RECORD_SET) {
        sqlite3_reset(st[3]);
        sqlite3_bind_int64(st[3], 1, c->id);
        bind_text_or_null(st[3], 2, c->new_over);
        bind_text_or_null(st[3], 3, c->new_home);
        bind_text_or_null(st[3], 4, reason);
        return sq_step_done(db, st[3], "record override", err, errlen);
    }
    return STORE_OK;
}

static int sq_apply_monitor_changes(kg_store *s, const store_monitor_change *ch, size_t n,
                                    const char *reason, size_t *changed, char *err,
                                    size_t errlen)
{
    /* our own write: data_version does not show it to us, so the next read reads */
    ((sq_store *)s->impl)->loaded_valid = false;
    static const char *const sql[4] = {
        "SELECT 1 FROM monitor WHERE id = ?1 AND node_id IS ?2 AND assigned_node IS ?3",
        "UPDATE monitor SET node_id = ?1, assigned_node = ?2 WHERE id = ?3",
        "DELETE FROM kumaguard_override WHERE monitor_id = ?1",
        "INSERT INTO kumaguard_override (monitor_id, node_id, home_node, reason, created_at)"
        " VALUES (?1, ?2, ?3, ?4, datetime('now')) ON CONFLICT (monitor_id) DO UPDATE SET"
        " node_id = excluded.node_id, home_node = excluded.home_node,"
        " reason = excluded.reason, created_at = excluded.created_at",
    };
    sqlite3 *db = db_of(s);
    *changed = 0;
    sqlite3_stmt *st[4] = {0};
    int rc = sq_begin(db, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = fence_check(s, err, errlen);
    for (int k = 0; rc == STORE_OK && k < 4; k++)
        rc = sq_prepare(db, sql[k], &st[k], "prepare monitor change", err, errlen);
    size_t done = 0;
    for (size_t i = 0; rc == STORE_OK && i < n; i++)
        rc = sq_apply_change(db, st, &ch[i], reason, &done, err, errlen);
    for (int k = 0; k < 4; k++)
        sqlite3_finalize(st[k]);
    rc = sq_end(db, rc, err, errlen);
    if (rc == STORE_OK)
        *changed = done;
    return rc;
}

/* ---- open / close ------------------------------------------------------------------------ */

static void sq_close(kg_store *s)
{
    sq_store *q = s->impl;
    if (q) {
        sqlite3_close(q->db);
        if (q->lock_fd >= 0)
            close(q->lock_fd); /* releases the lease */
        free(q);
    }
    free(s);
}

static const kg_store_ops sqlite_ops = {
    .backend = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .ensure_schema = sq_ensure_schema,
    .load_nodes = sq_load_nodes,
    .upsert_node = sq_upsert_node,
    .write_node_states = sq_write_node_states,
    .load_monitors = sq_load_monitors,
    .monitors_changed = sq_monitors_changed,
    .apply_moves = sq_apply_moves,
    .forget_stale_overrides = sq_forget_stale_overrides,
    .append_event = sq_append_event,
    .prune_events = sq_prune_events,
    .lease = sq_lease,
    .release_lease = sq_release_lease,
    .setup_status = sq_setup_status,
    .query_monitors = sq_query_monitors,
    .apply_monitor_changes = sq_apply_monitor_changes,
};

kg_store *store_sqlite_open(const char *path, char *err, size_t errlen)
{
    kg_store *s = calloc(1, sizeof(*s));
    sq_store *q = calloc(1, sizeof(*q));
    if (!s || !q) {
        free(s);
        free(q);
        snprintf(err, errlen, "sqlite: out of memory");
        return NULL;
    }
    s->ops = &sqlite_ops;
    s->impl = q;
    q->lock_fd = -1;
    snprintf(q->lock_path, sizeof(q->lock_path), "%s.lease", path);
    if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL)
        != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot open %s: %s", path,
                 q->db ? sqlite3_errmsg(q->db) : "out of memory");
        sq_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(q->db, 5000);
    /* WAL: the API's readers (other tools reading the file) never block the controller. */
    if (sq_exec(q->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
                "configure database", err, errlen) != STORE_OK) {
        sq_close(s);
        return NULL;
    }
    return s;
}
