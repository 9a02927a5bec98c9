/* store_mariadb.c — the cluster store on the MariaDB the Kuma nodes share (DB_HOST set).
 *
 * Owns: one libmariadb connection (reconnected after a loss), all SQL for it, the
 * kumaguard_* tables, and node/monitor only with --init-schema (they belong to the Kuma
 * nodes' migrations).  Must not: decide what to move, log, keep cluster state between calls,
 * or put the password anywhere (error texts name host, user and database only).
 *
 * Connection model.  The connection is opened lazily by the first operation.  Every operation
 * runs through run_op(): when it fails because the connection is gone (CR_* client errors,
 * killed, server shutdown) the connection is dropped, and if it had been idle-reused and
 * COMMIT had not been sent yet, the operation is retried once on a fresh connection — so a
 * server restart between two calls costs nothing, while a loss during COMMIT (outcome
 * unknown) is reported, never replayed.  A deadlock (whole transaction rolled back) is
 * retried once too.  Sessions run with time_zone '+00:00' so every TIMESTAMP we write or
 * read is UTC, and with lock waits shorter than the read timeout so a blocked statement
 * fails with a lock error instead of a dropped connection.
 *
 * Moves.  apply_moves bulk-loads the plan into a session-private temporary table (multi-row
 * INSERTs, names escaped with mysql_real_escape_string), then in one transaction runs a few
 * set-based statements per range of 10,000 moves (see APPLY_STEPS): set-based, yet no single
 * statement runs long enough to trip the read timeout on a large failover.
 *
 * Leader lease.  GET_LOCK on a name derived from the database (two clusters on one server do
 * not contend) is held by this connection; the session's wait_timeout is set to the lease TTL
 * so a controller that hangs loses the lock when its session times out.  Each fresh
 * acquisition increments kumaguard_leader.generation; every write transaction of a fenced
 * store first locks that row and compares (STORE_FENCED on mismatch). */
#include "store.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_NAME_SQL "LEFT(CONCAT('kumaguard_leader.', DATABASE()), 64)"
#define MOVES_PER_INSERT 4000 /* rows per multi-row INSERT: ~200 KB, far below max_allowed_packet */
#define MOVES_PER_STATEMENT 10000 /* moves per guarded UPDATE (see apply_guarded_moves) */
#define MAX_BINDS 12

typedef struct {
    MYSQL *db;              /* NULL = not connected */
    char *host;             /* NULL when connecting through a unix socket */
    char *socket;           /* DB_HOST starting with '/' */
    char *user;
    char *password;
    char *dbname;
    unsigned int port;
    unsigned int timeout_s; /* connect/read/write timeout */
    /* per attempt, see run_op */
    bool broken;            /* a connection error happened: drop the connection */
    bool commit_sent;       /* COMMIT was sent: the outcome may be unknown, never retry */
    unsigned int last_errno;
    /* lease */
    bool lock_held;         /* GET_LOCK succeeded on the current connection */
    int64_t lock_generation;
} my_store;

/* ---- errors and connection ------------------------------------------------------------- */

static bool is_connection_error(unsigned int e)
{
    return (e >= CR_MIN_ERROR && e <= CR_MAX_ERROR) || e == ER_CONNECTION_KILLED
           || e == ER_SERVER_SHUTDOWN;
}

static void record_error(my_store *m, unsigned int e)
{
    m->last_errno = e;
    if (is_connection_error(e))
        m->broken = true;
}

static int my_fail(my_store *m, const char *what, char *err, size_t errlen)
{
    unsigned int e = mysql_errno(m->db);
    snprintf(err, errlen, "mariadb: %s: %s (error %u)", what, mysql_error(m->db), e);
    record_error(m, e);
    return STORE_ERROR;
}

static int my_stmt_fail(my_store *m, MYSQL_STMT *st, const char *what, char *err,
                        size_t errlen)
{
    unsigned int e = mysql_stmt_errno(st);
    snprintf(err, errlen, "mariadb: %s: %s (error %u)", what, mysql_stmt_error(st), e);
    record_error(m, e);
    return STORE_ERROR;
}

static void my_disconnect(my_store *m)
{
    if (m->db)
        mysql_close(m->db);
    m->db = NULL;
    m->lock_held = false; /* the server released GET_LOCK with the session */
}

static void describe_target(const my_store *m, char *buf, size_t len)
{
    if (m->socket)
        snprintf(buf, len, "socket %s", m->socket);
    else
        snprintf(buf, len, "%s:%u", m->host ? m->host : "localhost", m->port);
}

static int my_connect(my_store *m, char *err, size_t errlen)
{
    char where[300];
    describe_target(m, where, sizeof(where));
    MYSQL *db = mysql_init(NULL);
    if (!db) {
        snprintf(err, errlen, "mariadb: out of memory");
        return STORE_ERROR;
    }
    unsigned int t = m->timeout_s;
    my_bool no = 0;
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    mysql_options(db, MYSQL_OPT_READ_TIMEOUT, &t);
    mysql_options(db, MYSQL_OPT_WRITE_TIMEOUT, &t);
    mysql_options(db, MYSQL_OPT_RECONNECT, &no); /* we reconnect ourselves, knowing the lease */
    mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(db, m->host, m->user, m->password, m->dbname, m->port, m->socket,
                            0)) {
        snprintf(err, errlen, "mariadb: cannot connect to %s (database %s, user %s): %s",
                 where, m->dbname, m->user, mysql_error(db));
        mysql_close(db);
        return STORE_ERROR;
    }
    unsigned int lock_wait = t > 1 ? t - 1 : 1;
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SET time_zone = '+00:00', innodb_lock_wait_timeout = %u, lock_wait_timeout = %u",
             lock_wait, lock_wait);
    if (mysql_query(db, sql)) {
        snprintf(err, errlen, "mariadb: session setup on %s: %s", where, mysql_error(db));
        mysql_close(db);
        return STORE_ERROR;
    }
    m->db = db;
    m->lock_held = false;
    return STORE_OK;
}

typedef int (*op_fn)(kg_store *s, void *arg, char *err, size_t errlen);

/* Runs one operation with the retry policy described at the top of the file. */
static int run_op(kg_store *s, op_fn fn, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    int rc = STORE_ERROR;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = m->db != NULL;
        if (!m->db && (rc = my_connect(m, err, errlen)) != STORE_OK)
            return rc;
        m->broken = false;
        m->commit_sent = false;
        m->last_errno = 0;
        rc = fn(s, arg, err, errlen);
        bool lost = m->broken;
        if (lost)
            my_disconnect(m);
        bool retry = rc == STORE_ERROR && !m->commit_sent
                     && ((lost && reused) || m->last_errno == ER_LOCK_DEADLOCK);
        if (!retry)
            break;
    }
    return rc;
}

/* ---- small query helpers --------------------------------------------------------------- */

static int my_exec(my_store *m, const char *sql, const char *what, char *err, size_t errlen)
{
    if (mysql_query(m->db, sql))
        return my_fail(m, what, err, errlen);
    return STORE_OK;
}

/* First column of the first row as an integer; *found = false for no row or NULL. */
static int my_query_int(my_store *m, const char *sql, int64_t *out, bool *found,
                        const char *what, char *err, size_t errlen)
{
    *out = 0;
    *found = false;
    if (mysql_query(m->db, sql))
        return my_fail(m, what, err, errlen);
    MYSQL_RES *res = mysql_store_result(m->db);
    if (!res)
        return my_fail(m, what, err, errlen);
    MYSQL_ROW row = mysql_fetch_row(res);
    if (row && row[0]) {
        *out = strtoll(row[0], NULL, 10);
        *found = true;
    }
    mysql_free_result(res);
    return STORE_OK;
}

static int my_begin(my_store *m, char *err, size_t errlen)
{
    return my_exec(m, "START TRANSACTION", "begin transaction", err, errlen);
}

/* Commits when rc is STORE_OK, else rolls back; err keeps the first failure's message. */
static int my_end(my_store *m, int rc, char *err, size_t errlen)
{
    if (rc == STORE_OK) {
        m->commit_sent = true;
        return my_exec(m, "COMMIT", "commit", err, errlen);
    }
    if (!m->broken && mysql_query(m->db, "ROLLBACK"))
        record_error(m, mysql_errno(m->db));
    return rc;
}

static int read_generation(my_store *m, bool for_update, int64_t *gen, char *err,
                           size_t errlen)
{
    bool found;
    return my_query_int(m,
                        for_update ? "SELECT generation FROM kumaguard_leader WHERE id = 1"
                                     " FOR UPDATE"
                                   : "SELECT generation FROM kumaguard_leader WHERE id = 1",
                        gen, &found, "read leader generation", err, errlen);
}

/* Inside a write transaction: locks the leader row and compares generations. */
static int fence_check(kg_store *s, char *err, size_t errlen)
{
    if (s->fence_generation <= 0)
        return STORE_OK;
    int64_t gen;
    int rc = read_generation(s->impl, true, &gen, err, errlen);
    if (rc != STORE_OK)
        return rc;
    if (gen != s->fence_generation) {
        snprintf(err, errlen, "fenced: leader generation is %lld, this controller holds %lld",
                 (long long)gen, (long long)s->fence_generation);
        return STORE_FENCED;
    }
    return STORE_OK;
}

/* START TRANSACTION + fence check; on failure the transaction is already ended. */
static int begin_write(kg_store *s, char *err, size_t errlen)
{
    my_store *m = s->impl;
    int rc = my_begin(m, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = fence_check(s, err, errlen);
    if (rc != STORE_OK)
        my_end(m, rc, err, errlen);
    return rc;
}

/* ---- prepared statements --------------------------------------------------------------- */

typedef struct {
    MYSQL_BIND b[MAX_BINDS];
    unsigned long len[MAX_BINDS];
    my_bool null[MAX_BINDS];
    long long num[MAX_BINDS];
    int n;
} binds;

static void binds_reset(binds *bs)
{
    memset(bs, 0, sizeof(*bs));
}

/* NULL s binds SQL NULL.  The string must outlive the execute. */
static void bind_str(binds *bs, const char *s)
{
    int i = bs->n++;
    MYSQL_BIND *b = &bs->b[i];
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)(s ? s : "");
    bs->len[i] = s ? (unsigned long)strlen(s) : 0;
    b->buffer_length = bs->len[i];
    b->length = &bs->len[i];
    bs->null[i] = s == NULL;
    b->is_null = &bs->null[i];
}

static void bind_i64(binds *bs, long long v)
{
    int i = bs->n++;
    MYSQL_BIND *b = &bs->b[i];
    bs->num[i] = v;
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = &bs->num[i];
}

static int stmt_prepare(my_store *m, const char *sql, MYSQL_STMT **out, const char *what,
                        char *err, size_t errlen)
{
    MYSQL_STMT *st = mysql_stmt_init(m->db);
    if (!st)
        return my_fail(m, what, err, errlen);
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql))) {
        int rc = my_stmt_fail(m, st, what, err, errlen);
        mysql_stmt_close(st);
        return rc;
    }
    *out = st;
    return STORE_OK;
}

static int stmt_run(my_store *m, MYSQL_STMT *st, binds *bs, const char *what, char *err,
                    size_t errlen)
{
    if (mysql_stmt_bind_param(st, bs->b) || mysql_stmt_execute(st))
        return my_stmt_fail(m, st, what, err, errlen);
    return STORE_OK;
}

/* Prepare, bind, execute, close: for statements run once. */
static int stmt_once(my_store *m, const char *sql, binds *bs, const char *what, char *err,
                     size_t errlen)
{
    MYSQL_STMT *st;
    int rc = stmt_prepare(m, sql, &st, what, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = stmt_run(m, st, bs, what, err, errlen);
    mysql_stmt_close(st);
    return rc;
}

/* ---- schema ----------------------------------------------------------------------------- */

static const char *const OWN_TABLES[] = {
    "CREATE TABLE IF NOT EXISTS kumaguard_override ("
    " monitor_id INT NOT NULL PRIMARY KEY,"
    " node_id VARCHAR(255) NOT NULL,"
    " home_node VARCHAR(50) NULL,"
    " reason VARCHAR(128) NULL,"
    " created_at DATETIME NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS kumaguard_event ("
    " id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " ts DATETIME(3) NOT NULL,"
    " kind VARCHAR(32) NOT NULL,"
    " node VARCHAR(50) NULL,"
    " from_node VARCHAR(50) NULL,"
    " to_node VARCHAR(50) NULL,"
    " count INT NOT NULL DEFAULT 0,"
    " duration_ms BIGINT NOT NULL DEFAULT 0,"
    " reason VARCHAR(192) NULL,"
    " KEY kumaguard_event_ts (ts)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS kumaguard_leader ("
    " id INT NOT NULL PRIMARY KEY,"
    " holder VARCHAR(128) NULL,"
    " generation BIGINT NOT NULL DEFAULT 0,"
    " renewed_at DATETIME(3) NULL) ENGINE=InnoDB",
};

/* Minimal tables compatible with the Kuma nodes' schema (SPEC section 1), for tests/trials. */
static const char *const KUMA_TABLES[] = {
    "CREATE TABLE IF NOT EXISTS node ("
    " node_id VARCHAR(50) NOT NULL PRIMARY KEY,"
    " node_name VARCHAR(100) NOT NULL,"
    " location VARCHAR(100) NULL,"
    " hostname VARCHAR(255) NULL,"
    " host VARCHAR(45) NULL,"
    " status VARCHAR(20) DEFAULT 'online',"
    " active BOOLEAN DEFAULT 1,"
    " is_primary BOOLEAN DEFAULT 0,"
    " created_date TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,"
    " modified_date TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,"
    " last_seen TIMESTAMP NULL DEFAULT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS monitor ("
    " id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(150) NULL,"
    " active BOOLEAN NOT NULL DEFAULT 1,"
    " user_id INT NULL,"
    " node_id VARCHAR(50) NULL,"
    " assigned_node VARCHAR(255) NULL,"
    " KEY monitor_node_id (node_id),"
    " KEY monitor_assigned_node (assigned_node)) ENGINE=InnoDB",
};

/* The columns of the Kuma tables this file reads or writes. */
#define KUMA_COLUMNS_SQL                                                                       \
    "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() AND ("   \
    "(table_name = 'node' AND column_name IN ('node_id', 'node_name', 'host', 'status',"       \
    " 'active', 'is_primary', 'created_date', 'modified_date', 'last_seen')) OR"               \
    "(table_name = 'monitor' AND column_name IN ('id', 'active', 'node_id', 'assigned_node')))"
#define KUMA_COLUMNS_EXPECTED 13

static int op_ensure_schema(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    bool init_schema = *(bool *)arg;
    for (size_t i = 0; i < sizeof(OWN_TABLES) / sizeof(OWN_TABLES[0]); i++)
        if (my_exec(m, OWN_TABLES[i], "create kumaguard tables", err, errlen) != STORE_OK)
            return STORE_ERROR;
    for (size_t i = 0; init_schema && i < sizeof(KUMA_TABLES) / sizeof(KUMA_TABLES[0]); i++)
        if (my_exec(m, KUMA_TABLES[i], "create node/monitor tables", err, errlen) != STORE_OK)
            return STORE_ERROR;
    int64_t columns;
    bool found;
    if (my_query_int(m, KUMA_COLUMNS_SQL, &columns, &found, "check node/monitor tables", err,
                     errlen) != STORE_OK)
        return STORE_ERROR;
    if (columns < KUMA_COLUMNS_EXPECTED) {
        snprintf(err, errlen,
                 "mariadb: database %s has no node/monitor tables with the cluster columns"
                 " yet (%lld of %d found); waiting for the Kuma nodes' migrations"
                 " (--init-schema creates them)",
                 m->dbname, (long long)columns, KUMA_COLUMNS_EXPECTED);
        return STORE_SCHEMA_MISSING;
    }
    return STORE_OK;
}

static int my_ensure_schema(kg_store *s, bool init_schema, char *err, size_t errlen)
{
    return run_op(s, op_ensure_schema, &init_schema, err, errlen);
}

static int op_ping(kg_store *s, void *arg, char *err, size_t errlen)
{
    (void)arg;
    my_store *m = s->impl;
    if (mysql_ping(m->db))
        return my_fail(m, "ping", err, errlen);
    return STORE_OK;
}

static int my_ping(kg_store *s, char *err, size_t errlen)
{
    return run_op(s, op_ping, NULL, err, errlen);
}

/* ---- nodes ------------------------------------------------------------------------------ */

static void field_copy(char *dst, size_t dstlen, const char *src, unsigned long len)
{
    if (!src)
        len = 0;
    if (len >= dstlen)
        len = (unsigned long)(dstlen - 1);
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

typedef struct {
    store_node_row **rows;
    size_t *n;
} load_nodes_args;

static int op_load_nodes(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    load_nodes_args *a = arg;
    if (mysql_query(m->db,
                    "SELECT node_id, node_name, host, status, COALESCE(is_primary, 0),"
                    " COALESCE(active, 1), COALESCE(UNIX_TIMESTAMP(last_seen), 0)"
                    " FROM node ORDER BY node_id"))
        return my_fail(m, "load nodes", err, errlen);
    MYSQL_RES *res = mysql_store_result(m->db);
    if (!res)
        return my_fail(m, "load nodes", err, errlen);
    size_t count = (size_t)mysql_num_rows(res);
    store_node_row *rows = calloc(count ? count : 1, sizeof(*rows));
    if (!rows) {
        mysql_free_result(res);
        snprintf(err, errlen, "mariadb: load nodes: out of memory");
        return STORE_ERROR;
    }
    MYSQL_ROW row;
    size_t i = 0;
    while (i < count && (row = mysql_fetch_row(res))) {
        unsigned long *len = mysql_fetch_lengths(res);
        store_node_row *r = &rows[i++];
        field_copy(r->id, sizeof(r->id), row[0], len[0]);
        field_copy(r->name, sizeof(r->name), row[1], len[1]);
        field_copy(r->host, sizeof(r->host), row[2], len[2]);
        field_copy(r->status, sizeof(r->status), row[3], len[3]);
        r->is_primary = row[4] && strtol(row[4], NULL, 10) != 0;
        r->active = row[5] && strtol(row[5], NULL, 10) != 0;
        r->last_seen_ms = row[6] ? strtoll(row[6], NULL, 10) * 1000 : 0;
    }
    mysql_free_result(res);
    *a->rows = rows;
    *a->n = i;
    return STORE_OK;
}

static int my_load_nodes(kg_store *s, store_node_row **rows, size_t *n, char *err,
                         size_t errlen)
{
    *rows = NULL;
    *n = 0;
    load_nodes_args a = {rows, n};
    return run_op(s, op_load_nodes, &a, err, errlen);
}

typedef struct {
    const char *id;
    const char *host;
} upsert_args;

static int op_upsert_node(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    upsert_args *a = arg;
    int rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    binds bs;
    binds_reset(&bs);
    bind_str(&bs, a->id);
    bind_str(&bs, a->id);
    bind_str(&bs, a->host);
    rc = stmt_once(m,
                   "INSERT INTO node (node_id, node_name, host, status, created_date,"
                   " modified_date) VALUES (?, ?, ?, 'online', UTC_TIMESTAMP(), UTC_TIMESTAMP())"
                   " ON DUPLICATE KEY UPDATE host = VALUES(host),"
                   " modified_date = UTC_TIMESTAMP()",
                   &bs, "upsert node", err, errlen);
    return my_end(m, rc, err, errlen);
}

static int my_upsert_node(kg_store *s, const char *id, const char *host, char *err,
                          size_t errlen)
{
    upsert_args a = {id, host};
    return run_op(s, op_upsert_node, &a, err, errlen);
}

typedef struct {
    const store_node_state *st;
    size_t n;
} states_args;

static int op_write_node_states(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    states_args *a = arg;
    int rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    MYSQL_STMT *st = NULL;
    rc = stmt_prepare(m,
                      "UPDATE node SET status = COALESCE(?, status),"
                      " last_seen = IF(? > 0, FROM_UNIXTIME(? DIV 1000), last_seen),"
                      " modified_date = UTC_TIMESTAMP() WHERE node_id = ?",
                      &st, "write node states", err, errlen);
    for (size_t i = 0; rc == STORE_OK && i < a->n; i++) {
        binds bs;
        binds_reset(&bs);
        bind_str(&bs, a->st[i].status);
        bind_i64(&bs, a->st[i].last_seen_ms);
        bind_i64(&bs, a->st[i].last_seen_ms);
        bind_str(&bs, a->st[i].id);
        rc = stmt_run(m, st, &bs, "write node states", err, errlen);
    }
    if (st)
        mysql_stmt_close(st);
    return my_end(m, rc, err, errlen);
}

static int my_write_node_states(kg_store *s, const store_node_state *st, size_t n, char *err,
                                size_t errlen)
{
    states_args a = {st, n};
    return run_op(s, op_write_node_states, &a, err, errlen);
}

/* ---- monitors --------------------------------------------------------------------------- */

typedef struct {
    kg_nametab *tab;
    store_monitor_set *out;
} load_monitors_args;

static int32_t intern_field(kg_nametab *tab, const char *v, unsigned long len)
{
    if (!v)
        return -1;
    int32_t idx = nametab_intern(tab, v, len);
    return idx < 0 ? -2 : idx;
}

/* Streams the rows (mysql_use_result: no client-side copy of the result) straight into
 * plan_monitor records; the only allocations are the growing array and new names. */
static int op_load_monitors(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    load_monitors_args *a = arg;
    static const char sql[] =
        "SELECT m.id, m.node_id, m.assigned_node, COALESCE(m.active = 1, 0),"
        " COALESCE(CAST(o.node_id AS BINARY) = CAST(m.assigned_node AS BINARY), 0)"
        " FROM monitor m LEFT JOIN kumaguard_override o ON o.monitor_id = m.id ORDER BY m.id";
    /* A record whose override someone else changed is garbage: drop it before it can match a
     * later manual pin by accident and make that pin look like ours (invariant 5). */
    int rc = STORE_OK;
    if (s->maintain_overrides) /* the leader's job: followers write nothing */
        rc = my_exec(m,
                     "DELETE o FROM kumaguard_override o LEFT JOIN monitor m ON m.id = o.monitor_id"
                     " AND CAST(m.assigned_node AS BINARY) = CAST(o.node_id AS BINARY)"
                     " WHERE m.id IS NULL",
                     "forget stale override records", err, errlen);
    if (rc != STORE_OK)
        return rc;
    if (mysql_real_query(m->db, sql, sizeof(sql) - 1))
        return my_fail(m, "load monitors", err, errlen);
    MYSQL_RES *res = mysql_use_result(m->db);
    if (!res)
        return my_fail(m, "load monitors", err, errlen);
    plan_monitor *mons = NULL;
    size_t count = 0, cap = 0;
    bool oom = false;
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res))) {
        if (oom)
            continue; /* drain the stream so the connection stays usable */
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            plan_monitor *grown = realloc(mons, ncap * sizeof(*grown));
            if (!grown) {
                oom = true;
                continue;
            }
            mons = grown;
            cap = ncap;
        }
        unsigned long *len = mysql_fetch_lengths(res);
        plan_monitor *p = &mons[count++];
        p->id = strtoll(row[0], NULL, 10);
        p->home = intern_field(a->tab, row[1], len[1]);
        p->over = intern_field(a->tab, row[2], len[2]);
        p->active = (uint8_t)(row[3] && row[3][0] == '1');
        p->ours = (uint8_t)(row[4] && row[4][0] == '1');
        if (p->home == -2 || p->over == -2)
            oom = true;
    }
    rc = STORE_OK;
    if (mysql_errno(m->db))
        rc = my_fail(m, "load monitors", err, errlen);
    else if (oom) {
        snprintf(err, errlen, "mariadb: load monitors: out of memory");
        rc = STORE_ERROR;
    }
    mysql_free_result(res);
    if (rc != STORE_OK) {
        free(mons);
        return rc;
    }
    a->out->monitors = mons;
    a->out->n = count;
    return STORE_OK;
}

static int my_load_monitors(kg_store *s, kg_nametab *tab, store_monitor_set *out, char *err,
                            size_t errlen)
{
    out->monitors = NULL;
    out->n = 0;
    load_monitors_args a = {tab, out};
    return run_op(s, op_load_monitors, &a, err, errlen);
}

/* ---- apply_moves ------------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len;
    size_t cap;
} sbuf;

static bool sbuf_reserve(sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static void sbuf_put(sbuf *b, const char *s, size_t n)
{
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Quoted, escaped SQL literals of the node names, built once per apply (a plan uses a
 * handful of names many thousand times). */
typedef struct {
    char **lit;
    int n;
} literals;

static const char *literal_of(my_store *m, literals *L, const kg_nametab *tab, int32_t idx)
{
    if (idx < 0)
        return "NULL";
    if (!L->lit[idx]) {
        const char *name = nametab_name(tab, idx);
        size_t len = strlen(name);
        char *q = malloc(2 * len + 3);
        if (!q)
            return NULL;
        q[0] = '\'';
        unsigned long e = mysql_real_escape_string(m->db, q + 1, name, (unsigned long)len);
        q[e + 1] = '\'';
        q[e + 2] = '\0';
        L->lit[idx] = q;
    }
    return L->lit[idx];
}

static void literals_free(literals *L)
{
    for (int i = 0; i < L->n; i++)
        free(L->lit[i]);
    free(L->lit);
}

static int create_moves_table(my_store *m, char *err, size_t errlen)
{
    /* The guard compares kg_moves columns with monitor columns, so they are created from
     * monitor's own definitions (same character set and collation, whatever Kuma chose). */
    if (my_exec(m, "DROP TEMPORARY TABLE IF EXISTS kg_moves", "drop moves table", err, errlen))
        return STORE_ERROR;
    return my_exec(m,
                   "CREATE TEMPORARY TABLE kg_moves (kind TINYINT NOT NULL DEFAULT 0,"
                   " clear_override TINYINT NOT NULL DEFAULT 0,"
                   " exp_active TINYINT NOT NULL DEFAULT 1,"
                   " PRIMARY KEY (id)) ENGINE=InnoDB"
                   " SELECT id, node_id AS exp_home, assigned_node AS exp_over,"
                   " assigned_node AS target FROM monitor WHERE 0",
                   "create moves table", err, errlen);
}

/* Bulk-loads the moves with multi-row INSERTs of MOVES_PER_INSERT rows. */
static int fill_moves_table(my_store *m, const kg_nametab *tab, const plan_move *moves,
                            size_t n, char *err, size_t errlen)
{
    static const char head[] = "INSERT INTO kg_moves (id, exp_home, exp_over, target, kind,"
                               " clear_override, exp_active) VALUES ";
    literals L = {calloc((size_t)(tab->n ? tab->n : 1), sizeof(char *)), tab->n};
    sbuf b = {0};
    bool oom = !L.lit;
    int rc = STORE_OK;
    for (size_t i = 0; !oom && rc == STORE_OK && i < n; i++) {
        const plan_move *mv = &moves[i];
        const char *eh = literal_of(m, &L, tab, mv->expect_home);
        const char *eo = literal_of(m, &L, tab, mv->expect_over);
        const char *to = literal_of(m, &L, tab, mv->kind == MOVE_CLEAR_OVERRIDE ? -1 : mv->to);
        if (!eh || !eo || !to
            || !sbuf_reserve(&b, sizeof(head) + strlen(eh) + strlen(eo) + strlen(to) + 64)) {
            oom = true;
            break;
        }
        if (b.len == 0)
            sbuf_put(&b, head, sizeof(head) - 1);
        else
            sbuf_put(&b, ",", 1);
        b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len, "(%lld,%s,%s,%s,%d,%d,%d)",
                                  (long long)mv->monitor_id, eh, eo, to, mv->kind,
                                  mv->clear_override ? 1 : 0, mv->expect_active ? 1 : 0);
        if ((i + 1) % MOVES_PER_INSERT == 0 || i + 1 == n) {
            if (mysql_real_query(m->db, b.p, (unsigned long)b.len))
                rc = my_fail(m, "fill moves table", err, errlen);
            b.len = 0;
        }
    }
    if (oom) {
        snprintf(err, errlen, "mariadb: fill moves table: out of memory");
        rc = STORE_ERROR;
    }
    free(b.p);
    literals_free(&L);
    return rc;
}

/* The steps of an apply, run in this order for each id range of kg_moves.  They lock the
 * monitor rows of the range (driving the join from kg_moves, so only those rows are locked),
 * drop the moves whose guard no longer holds (usually none), apply the rest with one UPDATE
 * of monitor, and bring kumaguard_override in line.  The rows stay locked until COMMIT, so
 * what remains in kg_moves is exactly what was applied.  (Marking applied moves inside the
 * UPDATE instead means updating a second table row by row: about half again the cost.) */
static const struct {
    const char *what;
    const char *sql;
    bool with_reason; /* first parameter is the override reason */
} APPLY_STEPS[] = {
    {"lock monitor rows",
     "SELECT COUNT(*) FROM kg_moves t STRAIGHT_JOIN monitor m ON m.id = t.id"
     " WHERE t.id BETWEEN ? AND ? FOR UPDATE", false},
    {"check move guards",
     "DELETE t FROM kg_moves t LEFT JOIN monitor m ON m.id = t.id WHERE t.id BETWEEN ? AND ?"
     " AND (m.id IS NULL OR NOT (m.node_id <=> t.exp_home AND m.assigned_node <=> t.exp_over"
     " AND COALESCE(m.active = 1, 0) = t.exp_active))",
     false},
    {"apply moves",
     "UPDATE kg_moves t STRAIGHT_JOIN monitor m ON m.id = t.id SET"
     " m.assigned_node = CASE t.kind WHEN 0 THEN t.target WHEN 1 THEN NULL"
     "  ELSE IF(t.clear_override = 1, NULL, m.assigned_node) END,"
     " m.node_id = IF(t.kind = 2, t.target, m.node_id)"
     " WHERE t.id BETWEEN ? AND ? AND m.node_id <=> t.exp_home AND m.assigned_node <=> t.exp_over"
     " AND COALESCE(m.active = 1, 0) = t.exp_active",
     false},
    {"clear override records",
     "DELETE o FROM kg_moves t STRAIGHT_JOIN kumaguard_override o ON o.monitor_id = t.id"
     " WHERE t.id BETWEEN ? AND ? AND (t.kind = 1 OR (t.kind = 2 AND t.clear_override = 1))",
     false},
    {"update override homes",
     "UPDATE kg_moves t STRAIGHT_JOIN kumaguard_override o ON o.monitor_id = t.id"
     " SET o.home_node = t.target WHERE t.id BETWEEN ? AND ? AND t.kind = 2", false},
    {"record overrides",
     "INSERT INTO kumaguard_override (monitor_id, node_id, home_node, reason, created_at)"
     " SELECT t.id, t.target, t.exp_home, ?, UTC_TIMESTAMP() FROM kg_moves t"
     " WHERE t.id BETWEEN ? AND ? AND t.kind = 0"
     " ON DUPLICATE KEY UPDATE node_id = VALUES(node_id), home_node = VALUES(home_node),"
     " reason = VALUES(reason), created_at = VALUES(created_at)", true},
};
#define N_APPLY_STEPS (sizeof(APPLY_STEPS) / sizeof(APPLY_STEPS[0]))

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Inside the transaction: every step over ranges of MOVES_PER_STATEMENT moves, so that no
 * single statement runs long enough to hit the connection's read timeout (DB_TIMEOUT) even
 * for 100,000 moves on a slow server; the transaction still makes it all-or-nothing. */
static int apply_guarded_moves(my_store *m, const plan_move *moves, size_t n,
                               const char *reason, size_t *applied, char *err, size_t errlen)
{
    int64_t *ids = malloc(n * sizeof(*ids));
    MYSQL_STMT *st[N_APPLY_STEPS] = {0};
    int rc = STORE_OK;
    if (!ids) {
        snprintf(err, errlen, "mariadb: apply moves: out of memory");
        return STORE_ERROR;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = moves[i].monitor_id;
    qsort(ids, n, sizeof(*ids), cmp_i64);
    for (size_t k = 0; rc == STORE_OK && k < N_APPLY_STEPS; k++)
        rc = stmt_prepare(m, APPLY_STEPS[k].sql, &st[k], APPLY_STEPS[k].what, err, errlen);
    for (size_t first = 0; rc == STORE_OK && first < n; first += MOVES_PER_STATEMENT) {
        size_t last = first + MOVES_PER_STATEMENT < n ? first + MOVES_PER_STATEMENT - 1 : n - 1;
        for (size_t k = 0; rc == STORE_OK && k < N_APPLY_STEPS; k++) {
            binds bs;
            binds_reset(&bs);
            if (APPLY_STEPS[k].with_reason)
                bind_str(&bs, reason);
            bind_i64(&bs, ids[first]);
            bind_i64(&bs, ids[last]);
            rc = stmt_run(m, st[k], &bs, APPLY_STEPS[k].what, err, errlen);
            if (rc == STORE_OK && mysql_stmt_field_count(st[k]) > 0
                && (mysql_stmt_store_result(st[k]) || mysql_stmt_free_result(st[k])))
                rc = my_stmt_fail(m, st[k], APPLY_STEPS[k].what, err, errlen);
        }
    }
    for (size_t k = 0; k < N_APPLY_STEPS; k++)
        if (st[k])
            mysql_stmt_close(st[k]);
    free(ids);
    int64_t count = 0;
    bool found;
    if (rc == STORE_OK)
        rc = my_query_int(m, "SELECT COUNT(*) FROM kg_moves", &count, &found, "count moves", err,
                          errlen);
    *applied = (size_t)count;
    return rc;
}

typedef struct {
    const kg_nametab *tab;
    const plan_move *moves;
    size_t n;
    const char *reason;
    store_apply_result *res;
} apply_args;

static int op_apply_moves(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    apply_args *a = arg;
    a->res->applied = 0;
    a->res->skipped = 0;
    /* The temporary table is private to this session, so it is filled before the transaction
     * starts: monitor rows are locked only for the UPDATE and the override bookkeeping. */
    int rc = create_moves_table(m, err, errlen);
    if (rc == STORE_OK)
        rc = fill_moves_table(m, a->tab, a->moves, a->n, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    size_t applied = 0;
    rc = apply_guarded_moves(m, a->moves, a->n, a->reason, &applied, err, errlen);
    rc = my_end(m, rc, err, errlen);
    if (rc == STORE_OK) {
        a->res->applied = applied;
        a->res->skipped = a->n - applied;
    }
    return rc;
}

static int my_apply_moves(kg_store *s, const kg_nametab *tab, const plan_move *moves, size_t n,
                          const char *what, store_apply_result *res, char *err, size_t errlen)
{
    res->applied = 0;
    res->skipped = 0;
    int rc = store_check_moves(tab, moves, n, err, errlen);
    if (rc != STORE_OK || n == 0)
        return rc;
    char reason[KG_REASON_MAX];
    snprintf(reason, sizeof(reason), "%s", what ? what : "");
    apply_args a = {tab, moves, n, reason, res};
    return run_op(s, op_apply_moves, &a, err, errlen);
}

/* ---- events ----------------------------------------------------------------------------- */

static const char *empty_to_null(const char *s)
{
    return (s && s[0]) ? s : NULL;
}

static int op_append_event(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    const kg_event *ev = arg;
    int rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    binds bs;
    binds_reset(&bs);
    bind_i64(&bs, ev->ts_ms);
    bind_i64(&bs, ev->ts_ms);
    bind_str(&bs, event_kind_name(ev->kind));
    bind_str(&bs, empty_to_null(ev->node));
    bind_str(&bs, empty_to_null(ev->from));
    bind_str(&bs, empty_to_null(ev->to));
    bind_i64(&bs, ev->count);
    bind_i64(&bs, ev->duration_ms);
    bind_str(&bs, empty_to_null(ev->reason));
    rc = stmt_once(m,
                   "INSERT INTO kumaguard_event (ts, kind, node, from_node, to_node, count,"
                   " duration_ms, reason) VALUES (IF(? > 0, FROM_UNIXTIME(? / 1000),"
                   " UTC_TIMESTAMP(3)), ?, ?, ?, ?, ?, ?, ?)",
                   &bs, "append event", err, errlen);
    return my_end(m, rc, err, errlen);
}

static int my_append_event(kg_store *s, const kg_event *ev, char *err, size_t errlen)
{
    return run_op(s, op_append_event, (void *)ev, err, errlen);
}

static int op_prune_events(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    int rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    binds bs;
    binds_reset(&bs);
    bind_i64(&bs, *(const int64_t *)arg);
    rc = stmt_once(m, "DELETE FROM kumaguard_event WHERE ts < FROM_UNIXTIME(? / 1000) LIMIT 10000",
                   &bs, "prune events", err, errlen);
    return my_end(m, rc, err, errlen);
}

static int my_prune_events(kg_store *s, int64_t before_ms, char *err, size_t errlen)
{
    return run_op(s, op_prune_events, &before_ms, err, errlen);
}

/* ---- lease ------------------------------------------------------------------------------ */

typedef struct {
    const char *instance_id;
    int ttl_ms;
    bool *leader;
    int64_t *generation;
} lease_args;

/* We hold the lock: renew renewed_at unless the generation moved under us (an operator or a
 * split brain), in which case we step down and let the next call re-acquire. */
static int lease_renew(kg_store *s, lease_args *a, char *err, size_t errlen)
{
    my_store *m = s->impl;
    int rc = my_begin(m, err, errlen);
    int64_t gen = 0;
    if (rc == STORE_OK)
        rc = read_generation(m, true, &gen, err, errlen);
    if (rc == STORE_OK && gen == m->lock_generation) {
        binds bs;
        binds_reset(&bs);
        bind_str(&bs, a->instance_id);
        rc = stmt_once(m,
                       "UPDATE kumaguard_leader SET holder = ?, renewed_at = UTC_TIMESTAMP(3)"
                       " WHERE id = 1",
                       &bs, "renew lease", err, errlen);
    }
    rc = my_end(m, rc, err, errlen);
    if (rc != STORE_OK)
        return rc;
    *a->generation = gen;
    if (gen == m->lock_generation) {
        *a->leader = true;
        return STORE_OK;
    }
    m->lock_held = false;
    return my_exec(m, "DO RELEASE_LOCK(" LOCK_NAME_SQL ")", "release lease", err, errlen);
}

static int lease_acquire(kg_store *s, lease_args *a, char *err, size_t errlen)
{
    my_store *m = s->impl;
    int64_t got;
    bool found;
    int rc = STORE_OK;
    if (a->ttl_ms > 0) {
        /* A hung controller keeps its TCP session open; the server drops the session (and
         * with it the lock) after wait_timeout seconds of silence.  Set before GET_LOCK: a
         * session lost between the two would otherwise keep the lock for the server's
         * default wait_timeout (often 8 hours), and nobody could lead. */
        char sql[64];
        snprintf(sql, sizeof(sql), "SET SESSION wait_timeout = %d",
                 a->ttl_ms < 1000 ? 1 : (a->ttl_ms + 999) / 1000);
        rc = my_exec(m, sql, "set lease timeout", err, errlen);
        if (rc != STORE_OK)
            return rc;
    }
    rc = my_query_int(m, "SELECT GET_LOCK(" LOCK_NAME_SQL ", 0)", &got, &found,
                      "acquire lease", err, errlen);
    if (rc != STORE_OK)
        return rc;
    if (!found || got != 1) /* someone else leads: report their generation */
        return read_generation(m, false, a->generation, err, errlen);
    m->lock_held = true;
    rc = my_begin(m, err, errlen);
    if (rc == STORE_OK) {
        binds bs;
        binds_reset(&bs);
        bind_str(&bs, a->instance_id);
        rc = stmt_once(m,
                       "INSERT INTO kumaguard_leader (id, holder, generation, renewed_at)"
                       " VALUES (1, ?, 1, UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE"
                       " generation = generation + 1, holder = VALUES(holder),"
                       " renewed_at = VALUES(renewed_at)",
                       &bs, "take lease", err, errlen);
        int64_t gen = 0;
        if (rc == STORE_OK)
            rc = read_generation(m, false, &gen, err, errlen);
        rc = my_end(m, rc, err, errlen);
        if (rc == STORE_OK) {
            m->lock_generation = gen;
            *a->generation = gen;
            *a->leader = true;
            return STORE_OK;
        }
    }
    /* Holding the lock without a committed generation would block every other controller. */
    if (!m->broken && mysql_query(m->db, "DO RELEASE_LOCK(" LOCK_NAME_SQL ")"))
        record_error(m, mysql_errno(m->db));
    m->lock_held = false;
    return rc;
}

static int op_lease(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    lease_args *a = arg;
    *a->leader = false;
    *a->generation = 0;
    if (m->lock_held) {
        int64_t mine;
        bool found;
        int rc = my_query_int(m, "SELECT IS_USED_LOCK(" LOCK_NAME_SQL ") = CONNECTION_ID()",
                              &mine, &found, "check lease", err, errlen);
        if (rc != STORE_OK)
            return rc;
        if (found && mine == 1)
            return lease_renew(s, a, err, errlen);
        m->lock_held = false;
    }
    return lease_acquire(s, a, err, errlen);
}

static int my_lease(kg_store *s, const char *instance_id, int ttl_ms, bool *leader,
                    int64_t *generation, char *err, size_t errlen)
{
    *leader = false; /* also when the connection cannot even be made */
    *generation = 0;
    lease_args a = {instance_id, ttl_ms, leader, generation};
    return run_op(s, op_lease, &a, err, errlen);
}

/* ---- open / close ----------------------------------------------------------------------- */

static void my_close(kg_store *s)
{
    my_store *m = s->impl;
    if (m) {
        my_disconnect(m);
        free(m->host);
        free(m->socket);
        free(m->user);
        if (m->password) {
            /* volatile: the compiler may not drop the wipe of memory about to be freed */
            volatile char *p = m->password;
            while (*p)
                *p++ = '\0';
        }
        free(m->password);
        free(m->dbname);
        free(m);
    }
    free(s);
}

static const kg_store_ops mariadb_ops = {
    .backend = "mariadb",
    .close = my_close,
    .ping = my_ping,
    .ensure_schema = my_ensure_schema,
    .load_nodes = my_load_nodes,
    .upsert_node = my_upsert_node,
    .write_node_states = my_write_node_states,
    .load_monitors = my_load_monitors,
    .apply_moves = my_apply_moves,
    .append_event = my_append_event,
    .prune_events = my_prune_events,
    .lease = my_lease,
};

static bool dup_opt(char **dst, const char *src, const char *fallback)
{
    const char *v = (src && src[0]) ? src : fallback;
    *dst = v ? strdup(v) : NULL;
    return !v || *dst;
}

kg_store *store_mariadb_open(const kg_config *cfg, char *err, size_t errlen)
{
    kg_store *s = calloc(1, sizeof(*s));
    my_store *m = calloc(1, sizeof(*m));
    if (!s || !m) {
        free(s);
        free(m);
        snprintf(err, errlen, "mariadb: out of memory");
        return NULL;
    }
    s->ops = &mariadb_ops;
    s->maintain_overrides = true;
    s->impl = m;
    bool is_socket = cfg->db_host && cfg->db_host[0] == '/';
    bool ok = dup_opt(is_socket ? &m->socket : &m->host, cfg->db_host, NULL)
              && dup_opt(&m->user, cfg->db_user, "kuma")
              && dup_opt(&m->password, cfg->db_password, NULL)
              && dup_opt(&m->dbname, cfg->db_name, "kuma");
    if (!ok) {
        my_close(s);
        snprintf(err, errlen, "mariadb: out of memory");
        return NULL;
    }
    m->port = cfg->db_port > 0 ? (unsigned int)cfg->db_port : 3306;
    int timeout_ms = cfg->db_timeout_ms > 0 ? cfg->db_timeout_ms : 5000;
    m->timeout_s = (unsigned int)((timeout_ms + 999) / 1000);
    return s;
}
