/* store_mariadb.c — the cluster store on the MariaDB the Kuma nodes share (DB_HOST set).
 *
 * Owns: one libmariadb connection (reconnected after a loss), all SQL for it, the
 * kumaguard_* tables, node/monitor only with --init-schema (they belong to the Kuma nodes'
 * migrations), and the generation of the lease it took.  Must not: decide what to move, log, keep cluster state between calls,
 * or put the password anywhere (error texts name host, user and database only).
 *
 * Connection model.  The connection is opened lazily by the first operation.  Every operation
 * runs through run_op(): when it fails because the connection is gone (CR_* client errors,
 * killed, server shutdown) the connection is dropped, and if it had been idle-reused and
 * COMMIT had not been sent yet, the operation is retried once on a fresh connection — so a
 * server restart between two calls costs nothing, while a loss during COMMIT (outcome
 * unknown) is reported, never replayed.  A deadlock (whole transaction rolled back) is
 * retried once too, also when it comes at COMMIT: that is Galera's certification failure,
 * whose outcome is known (rolled back everywhere).  Sessions run with time_zone '+00:00' so
 * every TIMESTAMP we write or read is UTC, and with lock waits shorter than the read timeout
 * so a blocked statement fails with a lock error instead of a dropped connection.
 *
 * Moves.  apply_moves runs in one transaction: the fence first (begin_write), then the moves
 * in monitor id order, in units of up to 4,000 (apply_units): per unit one guarded UPDATE of
 * `monitor` whose WHERE lists the ids and the values the plan saw (node_id, assigned_node,
 * active), with the new values as constants or a CASE over the unit's few groups of targets,
 * and one statement of kumaguard_override bookkeeping.  Small units share a round trip
 * (multi-statements, switched on for this operation only).  The UPDATE's "rows matched" says
 * whether every guard held; when one did not, that unit is rolled back to its savepoint and
 * applied exactly (rows locked, guards read, only those applied), so a row a Kuma node
 * changed meanwhile is never clobbered and never recorded as ours.  Measured against the
 * floor, one bare UPDATE of the same rows: bench/store_moves.sh.  Names are escaped with
 * mysql_real_escape_string; no statement runs long enough to trip the read timeout.
 *
 * Leader lease.  One row, kumaguard_leader id 1 (holder, generation, expires_at), taken and
 * renewed by compare-and-set UPDATEs whose expiry the database computes with its own clock
 * (UTC_TIMESTAMP(3) + ttl): renewed while its generation is still ours, taken by anyone only
 * once expired or released (expires_at NULL), each taking adding one to the generation.  It
 * is not tied to a session (GET_LOCK is per Galera node, so it is not used): a reconnect
 * keeps the lease, a dead controller loses it at expiry.  Every write transaction of a fenced
 * store begins by *writing* that row (fence_check: fence_seq + 1 where the generation is
 * ours), because a write is what the database arbitrates: on one server the row lock orders
 * it against a takeover; on Galera certification does — a takeover certified first makes our
 * transaction fail with 1213 even where this node had not applied it yet and we matched the
 * old generation (a read, even SELECT ... FOR UPDATE, is not certified).  The Galera errors
 * that mean "another node's write won" — 1213 (certification failure / deadlock), 1180
 * (error during COMMIT), 1047 (node not ready: outside the primary component) — are reported
 * on the lease and on fenced writes as STORE_FENCED (lease lost), not as an unavailable
 * database.  On a Galera node the lease read waits until the node has applied everything the
 * cluster committed before it (wsrep_sync_wait), so a lagging node does not show a stale
 * lease as free. */
#include "store.h"
#include "store_monitor_sql.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOVES_PER_STATEMENT 4000 /* monitors per guarded UPDATE (see apply_units): ~30 KB of
                                     ids, tens of milliseconds of work per statement */
#define MAX_GROUPS 16             /* groups (target, guard) per UPDATE: a CASE over them */
#define BATCH_BYTES (1 << 20)     /* SQL per round trip, far below max_allowed_packet */
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
    bool lease_at_stake;    /* the operation is the lease or a fenced write: Galera's
                               "another node won" errors mean lease lost (STORE_FENCED) */
    /* per connection */
    bool galera;            /* the server is a Galera node (wsrep_on): lease reads sync-wait */
    /* lease */
    int64_t lease_gen;      /* generation we took and renew; 0 = we hold no lease */
    bool json_table;        /* the server has JSON_TABLE (MariaDB 10.6+): cheap id lists */
    bool update_times;      /* MariaDB: InnoDB keeps table update times (monitors_changed) */
    unsigned long conn_epoch; /* connections made so far */
    /* monitors_changed: what the probe said just before the last successful full read */
    bool probe_valid;
    unsigned long probe_epoch;
    int64_t probe_at;       /* server time, s */
    int64_t probe_start;    /* when the server started (now - Uptime), s */
    int64_t probe_mon, probe_ovr; /* update times of monitor, kumaguard_override (-1: NULL) */
} my_store;

/* ---- errors and connection ------------------------------------------------------------- */

/* 1047 (ER_UNKNOWN_COM_ERROR) is what a Galera node answers while it is not in the primary
 * component: "WSREP has not yet prepared node for application use". */
#define ER_WSREP_NOT_READY ER_UNKNOWN_COM_ERROR

static bool is_connection_error(unsigned int e)
{
    /* A node outside the primary component is dropped too: a reconnect through DB_HOST (a
     * balancer) may reach a node that is in it. */
    return (e >= CR_MIN_ERROR && e <= CR_MAX_ERROR) || e == ER_CONNECTION_KILLED
           || e == ER_SERVER_SHUTDOWN || e == ER_WSREP_NOT_READY;
}

/* Errors by which Galera says that another node's write won, or that this node cannot take
 * part in deciding: on the lease or a fenced write they mean the lease is lost. */
static bool is_lease_lost_error(unsigned int e)
{
    return e == ER_LOCK_DEADLOCK || e == ER_ERROR_DURING_COMMIT || e == ER_WSREP_NOT_READY;
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
    /* CLIENT_FOUND_ROWS: affected rows = rows matched, so a compare-and-set that matched says
     * so even when it wrote the values already there. */
    if (!mysql_real_connect(db, m->host, m->user, m->password, m->dbname, m->port, m->socket,
                            CLIENT_FOUND_ROWS)) {
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
    /* A Galera node?  A server without wsrep has no such variable (error 1193): no. */
    bool galera = false;
    if (mysql_query(db, "SELECT @@GLOBAL.wsrep_on") == 0) {
        MYSQL_RES *res = mysql_store_result(db);
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        galera = row && row[0] && strtol(row[0], NULL, 10) == 1;
        mysql_free_result(res);
    } else if (mysql_errno(db) != ER_UNKNOWN_SYSTEM_VARIABLE) {
        snprintf(err, errlen, "mariadb: session setup on %s: %s", where, mysql_error(db));
        mysql_close(db);
        return STORE_ERROR;
    }
    m->db = db;
    m->galera = galera;
    m->json_table = mysql_get_server_version(db) >= 100600;
    m->update_times = strstr(mysql_get_server_info(db), "MariaDB") != NULL;
    m->conn_epoch++; /* a new session: the server may have restarted, so probes start over */
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
        m->lease_at_stake = false;
        rc = fn(s, arg, err, errlen);
        bool lost = m->broken;
        if (lost)
            my_disconnect(m);
        bool retry = rc == STORE_ERROR
                     && ((lost && reused && !m->commit_sent) || m->last_errno == ER_LOCK_DEADLOCK);
        if (!retry)
            break;
    }
    if (rc == STORE_ERROR && m->lease_at_stake && is_lease_lost_error(m->last_errno)) {
        char why[512];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errlen, "lease lost (another database node's write won): %s", why);
        rc = STORE_FENCED;
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

/* The fence, first statement of every write transaction of a fenced store: it *writes* the
 * lease row where the generation is still ours (see the top of the file for why a write). */
static int fence_check(kg_store *s, char *err, size_t errlen)
{
    if (s->fence_generation <= 0)
        return STORE_OK;
    my_store *m = s->impl;
    char sql[128];
    snprintf(sql, sizeof(sql),
             "UPDATE kumaguard_leader SET fence_seq = fence_seq + 1 WHERE id = 1"
             " AND generation = %lld", (long long)s->fence_generation);
    if (mysql_query(m->db, sql))
        return my_fail(m, "fence", err, errlen);
    if (mysql_affected_rows(m->db) == 1)
        return STORE_OK;
    int64_t gen = 0;
    bool found;
    int rc = my_query_int(m, "SELECT generation FROM kumaguard_leader WHERE id = 1", &gen, &found,
                          "read leader generation", err, errlen);
    if (rc != STORE_OK)
        return rc;
    snprintf(err, errlen, "fenced: leader generation is %lld, this controller holds %lld",
             (long long)gen, (long long)s->fence_generation);
    return STORE_FENCED;
}

/* START TRANSACTION + fence check; on failure the transaction is already ended. */
static int begin_write(kg_store *s, char *err, size_t errlen)
{
    my_store *m = s->impl;
    m->lease_at_stake = s->fence_generation > 0;
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

/* Prepare, bind, execute, close: for statements run once.  *matched (when not NULL) gets
 * the rows the statement matched (CLIENT_FOUND_ROWS). */
static int stmt_once_rows(my_store *m, const char *sql, binds *bs, const char *what,
                          uint64_t *matched, char *err, size_t errlen)
{
    MYSQL_STMT *st;
    int rc = stmt_prepare(m, sql, &st, what, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = stmt_run(m, st, bs, what, err, errlen);
    if (rc == STORE_OK && matched)
        *matched = (uint64_t)mysql_stmt_affected_rows(st);
    mysql_stmt_close(st);
    return rc;
}

static int stmt_once(my_store *m, const char *sql, binds *bs, const char *what, char *err,
                     size_t errlen)
{
    return stmt_once_rows(m, sql, bs, what, NULL, err, errlen);
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
    " renewed_at DATETIME(3) NULL,"
    " expires_at DATETIME(3) NULL,"
    " fence_seq BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB",
};

/* kumaguard_leader as created by versions that leased with GET_LOCK lacks the lease columns.
 * Their leader row then reads as released (expires_at NULL): stop those controllers before
 * starting this version (they do not look at the row's expiry). */
#define LEASE_COLUMNS_SQL                                                                      \
    "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE()"         \
    " AND table_name = 'kumaguard_leader' AND column_name IN ('expires_at', 'fence_seq')"
#define LEASE_COLUMNS_ADD                                                                      \
    "ALTER TABLE kumaguard_leader ADD COLUMN IF NOT EXISTS expires_at DATETIME(3) NULL,"      \
    " ADD COLUMN IF NOT EXISTS fence_seq BIGINT NOT NULL DEFAULT 0"

/* Minimal tables compatible with the Kuma nodes' schema (the node and monitor columns
 * kumaguard reads and writes), for tests and trials. */
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
    int64_t columns;
    bool found;
    if (my_query_int(m, LEASE_COLUMNS_SQL, &columns, &found, "check lease table", err, errlen)
        != STORE_OK)
        return STORE_ERROR;
    if (columns < 2 && my_exec(m, LEASE_COLUMNS_ADD, "add lease columns", err, errlen) != STORE_OK)
        return STORE_ERROR;
    for (size_t i = 0; init_schema && i < sizeof(KUMA_TABLES) / sizeof(KUMA_TABLES[0]); i++)
        if (my_exec(m, KUMA_TABLES[i], "create node/monitor tables", err, errlen) != STORE_OK)
            return STORE_ERROR;
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

/* ---- the change probe -------------------------------------------------------------------
 *
 * InnoDB keeps, in memory, the time of the last committed change of each table (shown as
 * information_schema.TABLES.UPDATE_TIME; MariaDB sets it at commit to the start time, in
 * seconds, of the transaction that made the change).  So the monitors are read again only
 * when that time of `monitor` or kumaguard_override differs from what it was just before our
 * last full read.  What that cannot see, and how it is covered:
 *   - a transaction that started in the same second as the change we last saw and commits
 *     after our read leaves the same time behind: so while that change is less than
 *     PROBE_SETTLE_S old at our read, every probe says "changed" (Kuma's writes are single
 *     statements of milliseconds);
 *   - the times live in memory: NULL until a table's first change after the server started
 *     (or after InnoDB dropped the table from its cache, which it does not do to a table in
 *     use: every Kuma node reads `monitor` each minute).  A restart is seen as a new session
 *     or a new server start time, and means "read";
 *   - only MariaDB is known to keep them like this: another server always reads;
 *   - our own apply_moves and forget_stale_overrides clear the probe;
 *   - as a last net, a full read at least every PROBE_MAX_AGE_S seconds. */
#define PROBE_SETTLE_S 3
#define PROBE_MAX_AGE_S 300

static const char PROBE_SQL[] =
    "SELECT UNIX_TIMESTAMP(), UNIX_TIMESTAMP() - (SELECT variable_value FROM"
    " information_schema.global_status WHERE variable_name = 'UPTIME'), (SELECT"
    " UNIX_TIMESTAMP(update_time) FROM information_schema.tables WHERE table_schema ="
    " DATABASE() AND table_name = 'monitor'), (SELECT UNIX_TIMESTAMP(update_time) FROM"
    " information_schema.tables WHERE table_schema = DATABASE() AND table_name ="
    " 'kumaguard_override')";

enum { PROBE_NOW, PROBE_START, PROBE_MON, PROBE_OVR, PROBE_N };

/* The probe's values; -1 for NULL. */
static int read_probe(my_store *m, int64_t v[PROBE_N], char *err, size_t errlen)
{
    if (mysql_real_query(m->db, PROBE_SQL, sizeof(PROBE_SQL) - 1))
        return my_fail(m, "probe monitor changes", err, errlen);
    MYSQL_RES *res = mysql_store_result(m->db);
    if (!res)
        return my_fail(m, "probe monitor changes", err, errlen);
    MYSQL_ROW row = mysql_fetch_row(res);
    for (int i = 0; i < PROBE_N; i++)
        v[i] = row && row[i] ? strtoll(row[i], NULL, 10) : -1;
    mysql_free_result(res);
    return STORE_OK;
}

static int op_monitors_changed(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    bool *changed = arg;
    *changed = true;
    if (!m->probe_valid || !m->update_times || m->probe_epoch != m->conn_epoch)
        return STORE_OK;
    int64_t v[PROBE_N];
    int rc = read_probe(m, v, err, errlen);
    if (rc != STORE_OK)
        return rc;
    int64_t last = m->probe_mon > m->probe_ovr ? m->probe_mon : m->probe_ovr;
    int64_t start_moved = v[PROBE_START] - m->probe_start;
    *changed = v[PROBE_MON] != m->probe_mon || v[PROBE_OVR] != m->probe_ovr ||
               v[PROBE_NOW] < 0 || v[PROBE_START] < 0 || start_moved > 2 || start_moved < -2 ||
               m->probe_at - last < PROBE_SETTLE_S ||
               v[PROBE_NOW] - m->probe_at >= PROBE_MAX_AGE_S;
    return STORE_OK;
}

static int my_monitors_changed(kg_store *s, bool *changed, char *err, size_t errlen)
{
    *changed = true;
    return run_op(s, op_monitors_changed, changed, err, errlen);
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
    int rc = STORE_OK;
    /* The probe just before the read: any commit after it shows as a change. */
    int64_t probe[PROBE_N] = {-1, -1, -1, -1};
    m->probe_valid = false;
    bool probed = m->update_times && read_probe(m, probe, err, errlen) == STORE_OK;
    if (!probed && m->broken)
        return STORE_ERROR;
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
    if (probed && probe[PROBE_NOW] >= 0 && probe[PROBE_START] >= 0) {
        m->probe_valid = true;
        m->probe_epoch = m->conn_epoch;
        m->probe_at = probe[PROBE_NOW];
        m->probe_start = probe[PROBE_START];
        m->probe_mon = probe[PROBE_MON];
        m->probe_ovr = probe[PROBE_OVR];
    }
    return STORE_OK;
}

/* A record whose override someone else changed is garbage: dropped, in a fenced write of the
 * leader, before it can match a later manual pin by accident and make that pin look like
 * ours.  (Reads never write: a stale record is simply not "ours" when monitors are loaded.) */
static int op_forget_stale_overrides(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    size_t *forgotten = arg;
    int rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = my_exec(m,
                 "DELETE o FROM kumaguard_override o LEFT JOIN monitor m ON m.id = o.monitor_id"
                 " AND CAST(m.assigned_node AS BINARY) = CAST(o.node_id AS BINARY)"
                 " WHERE m.id IS NULL",
                 "forget stale override records", err, errlen);
    if (rc == STORE_OK)
        *forgotten = (size_t)mysql_affected_rows(m->db);
    if (*forgotten)
        m->probe_valid = false; /* the table changed under the probe's last answer */
    return my_end(m, rc, err, errlen);
}

static int my_forget_stale_overrides(kg_store *s, size_t *forgotten, char *err, size_t errlen)
{
    *forgotten = 0;
    if (s->fence_generation <= 0) {
        snprintf(err, errlen, "forget stale override records: only the leader writes");
        return STORE_FENCED;
    }
    return run_op(s, op_forget_stale_overrides, forgotten, err, errlen);
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

/* A growable text buffer for the SQL of a batch; an allocation failure sticks in `oom`. */
typedef struct {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
} sbuf;

static void sbuf_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sbuf_str(sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

static void sbuf_i64(sbuf *b, long long v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", v);
    sbuf_add(b, num, (size_t)n);
}

/* Quoted, escaped SQL literals of the node names, built once per apply (a plan uses a
 * handful of names many thousand times). */
typedef struct {
    char **lit;
    int n;
} literals;

/* The literal of name idx ("NULL" for -1); NULL only on out of memory. */
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
    for (int i = 0; L->lit && i < L->n; i++) /* lit is NULL when its calloc failed */
        free(L->lit[i]);
    free(L->lit);
    L->lit = NULL;
}

/* ---- write_node_states ------------------------------------------------------------------ */

#define STATES_PER_STATEMENT 250

static int states_oom(char *err, size_t errlen)
{
    snprintf(err, errlen, "mariadb: write node states: out of memory");
    return STORE_ERROR;
}

/* One UPDATE per STATES_PER_STATEMENT nodes, with CASE over node_id, instead of one per node:
 * a leader refreshes last_seen of every node each refresh interval, and with 1,000 nodes the
 * statements, not the rows, were most of kumaguard's load on the server. */
static int op_write_node_states(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    states_args *a = arg;
    int rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    sbuf q = {0};
    char **lit = calloc(STATES_PER_STATEMENT, sizeof *lit);
    if (!lit)
        rc = states_oom(err, errlen);
    for (size_t from = 0; rc == STORE_OK && from < a->n; from += STATES_PER_STATEMENT) {
        size_t to = a->n - from < STATES_PER_STATEMENT ? a->n : from + STATES_PER_STATEMENT;
        for (size_t i = from; i < to && rc == STORE_OK; i++) {
            const char *id = a->st[i].id;
            size_t len = strlen(id);
            char *l = malloc(2 * len + 3);
            if (!l) {
                rc = states_oom(err, errlen);
                break;
            }
            l[0] = '\'';
            unsigned long n = mysql_real_escape_string(m->db, l + 1, id, (unsigned long)len);
            l[n + 1] = '\'';
            l[n + 2] = '\0';
            lit[i - from] = l;
        }
        if (rc != STORE_OK)
            break;
        size_t with_status = 0, with_seen = 0;
        for (size_t i = from; i < to; i++) {
            with_status += a->st[i].status != NULL;
            with_seen += a->st[i].last_seen_ms > 0;
        }
        q.len = 0;
        /* a CASE needs at least one WHEN */
        sbuf_str(&q, with_status ? "UPDATE node SET status = CASE node_id"
                                 : "UPDATE node SET status = status");
        for (size_t i = from; i < to; i++) {
            if (!a->st[i].status)
                continue;
            sbuf_str(&q, " WHEN ");
            sbuf_str(&q, lit[i - from]);
            sbuf_str(&q, " THEN '");
            sbuf_str(&q, a->st[i].status); /* one of node_state_db_value's words */
            sbuf_str(&q, "'");
        }
        if (with_status)
            sbuf_str(&q, " ELSE status END");
        sbuf_str(&q, with_seen ? ", last_seen = CASE node_id" : "");
        for (size_t i = from; i < to; i++) {
            if (a->st[i].last_seen_ms <= 0)
                continue;
            sbuf_str(&q, " WHEN ");
            sbuf_str(&q, lit[i - from]);
            sbuf_str(&q, " THEN FROM_UNIXTIME(");
            sbuf_i64(&q, a->st[i].last_seen_ms / 1000);
            sbuf_str(&q, ")");
        }
        if (with_seen)
            sbuf_str(&q, " ELSE last_seen END");
        sbuf_str(&q, ", modified_date = UTC_TIMESTAMP() WHERE node_id IN (");
        for (size_t i = from; i < to; i++) {
            sbuf_str(&q, i > from ? ", " : "");
            sbuf_str(&q, lit[i - from]);
        }
        sbuf_str(&q, ")");
        for (size_t i = 0; i < STATES_PER_STATEMENT; i++) {
            free(lit[i]);
            lit[i] = NULL;
        }
        if (q.oom)
            rc = states_oom(err, errlen);
        else if (mysql_real_query(m->db, q.p, q.len))
            rc = my_fail(m, "write node states", err, errlen);
    }
    for (size_t i = 0; lit && i < STATES_PER_STATEMENT; i++)
        free(lit[i]);
    free(lit);
    free(q.p);
    return my_end(m, rc, err, errlen);
}

static int my_write_node_states(kg_store *s, const store_node_state *st, size_t n, char *err,
                                size_t errlen)
{
    states_args a = {st, n};
    return run_op(s, op_write_node_states, &a, err, errlen);
}

/* Moves that share kind, guard values and target form a group; a failover has one group per
 * target node, a revert one per (home, override) pair. */
static int group_key_cmp(const plan_move *x, const plan_move *y)
{
    int32_t kx[6] = {x->kind, x->clear_override, x->expect_active, x->expect_home,
                     x->expect_over, x->kind == MOVE_CLEAR_OVERRIDE ? -1 : x->to};
    int32_t ky[6] = {y->kind, y->clear_override, y->expect_active, y->expect_home,
                     y->expect_over, y->kind == MOVE_CLEAR_OVERRIDE ? -1 : y->to};
    for (int i = 0; i < 6; i++)
        if (kx[i] != ky[i])
            return kx[i] < ky[i] ? -1 : 1;
    return 0;
}

static bool same_guard(const plan_move *x, const plan_move *y)
{
    return x->expect_active == y->expect_active && x->expect_home == y->expect_home &&
           x->expect_over == y->expect_over;
}

static int id_cmp(const void *a, const void *b)
{
    const plan_move *x = *(const plan_move *const *)a, *y = *(const plan_move *const *)b;
    return (x->monitor_id > y->monitor_id) - (x->monitor_id < y->monitor_id);
}

/* A unit: consecutive moves in monitor id order (at most MOVES_PER_STATEMENT, of at most
 * MAX_GROUPS groups), applied by one guarded UPDATE of `monitor` and one bookkeeping statement
 * per group.  Going through the table in id order matters: an UPDATE per group would walk
 * every page once per failover target, and cost about twice the floor. */
typedef struct {
    const plan_move *const *mv; /* ascending monitor id */
    size_t n;
} apply_unit;

typedef struct {
    my_store *m;
    const kg_nametab *tab;
    literals names;
    const char *reason;         /* escaped, quoted */
    sbuf sql;
    /* the unit being written: its groups, and the moves' ids ordered by group */
    const plan_move *key[MAX_GROUPS];
    size_t first[MAX_GROUPS + 1];
    int g;
    uint8_t gi[MOVES_PER_STATEMENT]; /* group of each move of the unit */
    int64_t *ids;               /* [MOVES_PER_STATEMENT] */
    int64_t *all;               /* [MOVES_PER_STATEMENT] the unit's ids, ascending */
} apply_ctx;

/* Splits a unit into its groups: key[], and ids[first[k]..first[k+1]) ascending per group. */
static void unit_groups(apply_ctx *a, const apply_unit *u)
{
    uint8_t *gi = a->gi;
    size_t count[MAX_GROUPS] = {0};
    a->g = 0;
    for (size_t i = 0; i < u->n; i++) {
        int k = 0;
        while (k < a->g && group_key_cmp(a->key[k], u->mv[i]) != 0)
            k++;
        if (k == a->g)
            a->key[a->g++] = u->mv[i]; /* build_units keeps it within MAX_GROUPS */
        gi[i] = (uint8_t)k;
        count[k]++;
        a->all[i] = u->mv[i]->monitor_id;
    }
    a->first[0] = 0;
    for (int k = 0; k < a->g; k++)
        a->first[k + 1] = a->first[k] + count[k];
    size_t fill[MAX_GROUPS];
    memcpy(fill, a->first, sizeof(fill));
    for (size_t i = 0; i < u->n; i++)
        a->ids[fill[gi[i]]++] = u->mv[i]->monitor_id;
}

static void sql_ids(sbuf *b, const int64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            sbuf_add(b, ",", 1);
        sbuf_i64(b, ids[i]);
    }
}

static void sql_in_group(apply_ctx *a, int k)
{
    sbuf_str(&a->sql, " WHEN id IN (");
    sql_ids(&a->sql, a->ids + a->first[k], a->first[k + 1] - a->first[k]);
    sbuf_str(&a->sql, ") THEN ");
}

/* What group k writes into a column ("node_id" or "assigned_node"); NULL when it leaves the
 * column alone; "" on out of memory. */
static const char *group_value(apply_ctx *a, int k, bool node_id)
{
    const plan_move *g = a->key[k];
    const char *to = g->kind == MOVE_CLEAR_OVERRIDE ? "NULL"
                                                    : literal_of(a->m, &a->names, a->tab, g->to);
    if (!to)
        return "";
    if (node_id)
        return g->kind == MOVE_SET_HOME ? to : NULL;
    if (g->kind == MOVE_SET_OVERRIDE)
        return to;
    return g->kind == MOVE_CLEAR_OVERRIDE || g->clear_override ? "NULL" : NULL;
}

/* "col = value" for the unit: a constant when every group writes the same value, else a
 * CASE over the groups' ids.  Nothing when no group writes the column. */
static bool sql_set_column(apply_ctx *a, const char *col, bool node_id, bool *first)
{
    const char *same = NULL;
    bool all_same = true, any = false;
    for (int k = 0; k < a->g; k++) {
        const char *v = group_value(a, k, node_id);
        if (v && !*v)
            return false;
        if (!v) {
            all_same = false;
            continue;
        }
        all_same &= !same || strcmp(same, v) == 0;
        same = v;
        any = true;
    }
    if (!any)
        return true;
    sbuf_str(&a->sql, *first ? "" : ", ");
    *first = false;
    sbuf_str(&a->sql, col);
    sbuf_str(&a->sql, " = ");
    if (all_same) {
        sbuf_str(&a->sql, same);
        return true;
    }
    sbuf_str(&a->sql, "CASE");
    for (int k = 0; k < a->g; k++) {
        const char *v = group_value(a, k, node_id);
        if (v) {
            sql_in_group(a, k);
            sbuf_str(&a->sql, v);
        }
    }
    sbuf_str(&a->sql, " ELSE ");
    sbuf_str(&a->sql, col);
    sbuf_str(&a->sql, " END");
    return true;
}

static bool sql_guard_of(apply_ctx *a, const plan_move *g)
{
    const char *eh = literal_of(a->m, &a->names, a->tab, g->expect_home);
    const char *eo = literal_of(a->m, &a->names, a->tab, g->expect_over);
    if (!eh || !eo)
        return false;
    sbuf_str(&a->sql, "node_id <=> ");
    sbuf_str(&a->sql, eh);
    sbuf_str(&a->sql, " AND assigned_node <=> ");
    sbuf_str(&a->sql, eo);
    sbuf_str(&a->sql, g->expect_active ? " AND COALESCE(active = 1, 0) = 1"
                                       : " AND COALESCE(active = 1, 0) = 0");
    return true;
}

/* " WHERE id IN (unit) AND <guard>": the rows that still hold node_id, assigned_node and
 * active as the plan saw them (a monitor switched off meanwhile never gets an override). */
static bool sql_where_guarded(apply_ctx *a, size_t n)
{
    sbuf_str(&a->sql, " WHERE id IN (");
    sql_ids(&a->sql, a->all, n);
    sbuf_str(&a->sql, ") AND ");
    bool one = true;
    for (int k = 1; k < a->g; k++)
        one &= same_guard(a->key[0], a->key[k]);
    if (one)
        return sql_guard_of(a, a->key[0]);
    sbuf_str(&a->sql, "CASE");
    for (int k = 0; k < a->g; k++) {
        sql_in_group(a, k);
        if (!sql_guard_of(a, a->key[k]))
            return false;
    }
    sbuf_str(&a->sql, " ELSE 0 END");
    return true;
}

static bool records_ours(const plan_move *g)
{
    return g->kind == MOVE_SET_OVERRIDE;
}

/* A record exists only for a monitor that had an override (stale ones are dropped at the next
 * load), so a home change without one needs no bookkeeping. */
static bool drops_record(const plan_move *g)
{
    return g->expect_over >= 0 &&
           (g->kind == MOVE_CLEAR_OVERRIDE || (g->kind == MOVE_SET_HOME && g->clear_override));
}

static bool moves_record_home(const plan_move *g)
{
    return g->expect_over >= 0 && g->kind == MOVE_SET_HOME && !g->clear_override;
}

static const char RECORD_UPSERT[] =
    " ON DUPLICATE KEY UPDATE node_id = VALUES(node_id), home_node = VALUES(home_node),"
    " reason = VALUES(reason), created_at = VALUES(created_at);";

/* Records our new overrides, for every SET_OVERRIDE group of the unit in one statement in
 * monitor id order (appends to the primary key instead of one pass per group): the ids and
 * group numbers as one JSON literal, which costs the server half of what an IN list of
 * values does; the group's target and home come out of ELT().  Servers without JSON_TABLE
 * (before MariaDB 10.6) get one INSERT ... SELECT per group.  Returns the number of
 * statements written, -1 on out of memory. */
static int sql_record_overrides(apply_ctx *a, const apply_unit *u)
{
    sbuf *b = &a->sql;
    int n_ins = 0, num[MAX_GROUPS] = {0};
    for (int k = 0; k < a->g; k++)
        num[k] = records_ours(a->key[k]) ? ++n_ins : 0;
    if (n_ins == 0)
        return 0;
    if (!a->m->json_table) {
        for (int k = 0; k < a->g; k++) {
            if (!num[k])
                continue;
            const char *to = literal_of(a->m, &a->names, a->tab, a->key[k]->to);
            const char *eh = literal_of(a->m, &a->names, a->tab, a->key[k]->expect_home);
            if (!to || !eh)
                return -1;
            sbuf_str(b, "INSERT INTO kumaguard_override (monitor_id, node_id, home_node,"
                        " reason, created_at) SELECT id, ");
            sbuf_str(b, to);
            sbuf_str(b, ", ");
            sbuf_str(b, eh);
            sbuf_str(b, ", ");
            sbuf_str(b, a->reason);
            sbuf_str(b, ", UTC_TIMESTAMP() FROM monitor WHERE id IN (");
            sql_ids(b, a->ids + a->first[k], a->first[k + 1] - a->first[k]);
            sbuf_add(b, ")", 1);
            sbuf_str(b, RECORD_UPSERT);
        }
        return n_ins;
    }
    sbuf_str(b, "INSERT INTO kumaguard_override (monitor_id, node_id, home_node, reason,"
                " created_at) SELECT j.id, ELT(j.g");
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < a->g; k++) {
            if (!num[k])
                continue;
            const plan_move *g = a->key[k];
            const char *v = literal_of(a->m, &a->names, a->tab, pass ? g->expect_home : g->to);
            if (!v)
                return -1;
            sbuf_str(b, ", ");
            sbuf_str(b, v);
        }
        sbuf_str(b, pass ? "), " : "), ELT(j.g");
    }
    sbuf_str(b, a->reason);
    sbuf_str(b, ", UTC_TIMESTAMP() FROM JSON_TABLE('[");
    bool first = true;
    for (size_t i = 0; i < u->n; i++) {
        int g = num[a->gi[i]];
        if (!g)
            continue;
        sbuf_str(b, first ? "[" : ",[");
        first = false;
        sbuf_i64(b, u->mv[i]->monitor_id);
        sbuf_add(b, ",", 1);
        sbuf_i64(b, g);
        sbuf_add(b, "]", 1);
    }
    sbuf_str(b, "]', '$[*]' COLUMNS (id INT PATH '$[0]', g INT PATH '$[1]')) AS j");
    sbuf_str(b, RECORD_UPSERT);
    return 1;
}

/* The rest of the bookkeeping: records of overrides we clear dropped (one statement for the
 * unit), and the home kept up to date in the records of monitors whose home we change. */
static int sql_other_records(apply_ctx *a, const apply_unit *u)
{
    sbuf *b = &a->sql;
    int n = 0;
    bool any_drop = false;
    for (int k = 0; k < a->g; k++)
        any_drop |= drops_record(a->key[k]);
    if (any_drop) {
        sbuf_str(b, "DELETE FROM kumaguard_override WHERE monitor_id IN (");
        bool first = true;
        for (size_t i = 0; i < u->n; i++) {
            if (!drops_record(a->key[a->gi[i]]))
                continue;
            if (!first)
                sbuf_add(b, ",", 1);
            first = false;
            sbuf_i64(b, u->mv[i]->monitor_id);
        }
        sbuf_str(b, ");");
        n++;
    }
    for (int k = 0; k < a->g; k++) {
        if (!moves_record_home(a->key[k]))
            continue;
        const char *to = literal_of(a->m, &a->names, a->tab, a->key[k]->to);
        if (!to)
            return -1;
        sbuf_str(b, "UPDATE kumaguard_override SET home_node = ");
        sbuf_str(b, to);
        sbuf_str(b, " WHERE monitor_id IN (");
        sql_ids(b, a->ids + a->first[k], a->first[k + 1] - a->first[k]);
        sbuf_str(b, ");");
        n++;
    }
    return n;
}

/* Appends the unit's statements (each ending in ';'): the guarded UPDATE first, then the
 * bookkeeping.  Returns how many statements, 0 on out of memory. */
static int sql_unit(apply_ctx *a, const apply_unit *u)
{
    unit_groups(a, u);
    bool first = true;
    sbuf_str(&a->sql, "UPDATE monitor SET ");
    if (!sql_set_column(a, "assigned_node", false, &first) ||
        !sql_set_column(a, "node_id", true, &first) || !sql_where_guarded(a, u->n))
        return 0;
    sbuf_add(&a->sql, ";", 1);
    int ins = sql_record_overrides(a, u);
    int other = ins < 0 ? -1 : sql_other_records(a, u);
    if (other < 0 || a->sql.oom)
        return 0;
    return 1 + ins + other;
}

/* "Rows matched: N" of the UPDATE just read (rows that held the guard, changed or not). */
static size_t rows_matched(MYSQL *db)
{
    const char *info = mysql_info(db);
    unsigned long long matched;
    if (info && sscanf(info, "Rows matched: %llu", &matched) == 1)
        return (size_t)matched;
    return (size_t)mysql_affected_rows(db);
}

/* Sends a->sql (several statements) in one round trip and reads every result:
 * matched[upd_of_stmt[i]] receives the row count of statement i when upd_of_stmt[i] >= 0.
 * Leaves the connection ready for the next query whatever happens. */
static int run_batch(apply_ctx *a, const int *upd_of_stmt, size_t *matched, char *err,
                     size_t errlen)
{
    my_store *m = a->m;
    if (a->sql.oom) {
        snprintf(err, errlen, "mariadb: apply moves: out of memory");
        return STORE_ERROR;
    }
    if (mysql_real_query(m->db, a->sql.p, (unsigned long)a->sql.len))
        return my_fail(m, "apply moves", err, errlen);
    int rc = STORE_OK;
    for (int i = 0;; i++) {
        MYSQL_RES *res = mysql_store_result(m->db); /* none for these statements */
        if (res)
            mysql_free_result(res);
        if (upd_of_stmt[i] >= 0)
            matched[upd_of_stmt[i]] = rows_matched(m->db);
        int next = mysql_next_result(m->db);
        if (next == -1)
            break;
        if (next > 0) { /* the server stopped at this statement */
            rc = my_fail(m, "apply moves", err, errlen);
            break;
        }
    }
    return rc;
}

/* The slow path for a unit that a Kuma node changed meanwhile: lock its rows, keep the moves
 * whose rows still hold the guard, and apply exactly those. */
static int apply_unit_exact(apply_ctx *a, const apply_unit *u, size_t *applied, char *err,
                            size_t errlen)
{
    my_store *m = a->m;
    a->sql.len = 0;
    unit_groups(a, u);
    sbuf_str(&a->sql, "SELECT id FROM monitor");
    if (!sql_where_guarded(a, u->n) || (sbuf_str(&a->sql, " ORDER BY id FOR UPDATE"),
                                       a->sql.oom)) {
        snprintf(err, errlen, "mariadb: apply moves: out of memory");
        return STORE_ERROR;
    }
    if (mysql_real_query(m->db, a->sql.p, (unsigned long)a->sql.len))
        return my_fail(m, "lock changed rows", err, errlen);
    MYSQL_RES *res = mysql_store_result(m->db);
    if (!res)
        return my_fail(m, "lock changed rows", err, errlen);
    const plan_move **held = malloc((u->n ? u->n : 1) * sizeof(*held));
    size_t k = 0, i = 0;
    MYSQL_ROW row;
    while (held && (row = mysql_fetch_row(res))) { /* both in id order: a merge */
        int64_t id = strtoll(row[0], NULL, 10);
        while (i < u->n && u->mv[i]->monitor_id < id)
            i++;
        if (i < u->n && u->mv[i]->monitor_id == id)
            held[k++] = u->mv[i++];
    }
    mysql_free_result(res);
    if (!held) {
        snprintf(err, errlen, "mariadb: apply moves: out of memory");
        return STORE_ERROR;
    }
    int rc = STORE_OK;
    if (k > 0) {
        apply_unit h = {held, k};
        int upd[MAX_GROUPS + 4];
        size_t matched = 0;
        upd[0] = 0;
        for (int s = 1; s < MAX_GROUPS + 4; s++)
            upd[s] = -1;
        a->sql.len = 0;
        if (sql_unit(a, &h) == 0) {
            snprintf(err, errlen, "mariadb: apply moves: out of memory");
            rc = STORE_ERROR;
        } else {
            rc = run_batch(a, upd, &matched, err, errlen);
        }
        if (rc == STORE_OK && matched != k) { /* the rows are locked: cannot happen */
            snprintf(err, errlen, "mariadb: apply moves: %zu of %zu locked rows changed",
                     k - matched, k);
            rc = STORE_ERROR;
        }
    }
    free(held);
    if (rc == STORE_OK)
        *applied += k;
    return rc;
}

/* Runs the units, each behind a savepoint, small ones several per round trip (a batch holds
 * at most MOVES_PER_STATEMENT monitors and about BATCH_BYTES of SQL: a large unit is a batch
 * of its own, so little work is ever done twice).  The fast path is the common one: a unit's
 * UPDATE matched every monitor, so every guard held and the bookkeeping that followed it is
 * right.  A unit that matched fewer (a Kuma node changed or deleted some of its rows since the
 * plan) is rolled back to its savepoint, which also undoes the units after it in that batch,
 * and applied exactly (apply_unit_exact).  Some node is then writing while we apply, so the
 * remaining units go the exact way too: two round trips each, but no work done twice. */
static int apply_units(apply_ctx *a, const apply_unit *units, size_t n_units, size_t *applied,
                       char *err, size_t errlen)
{
    /* calloc: every slot the statements below do not reach reads as "no UPDATE here" / 0 */
    int *upd = calloc((MAX_GROUPS + 4) * n_units + 1, sizeof(int));
    size_t *matched = calloc(n_units + 1, sizeof(size_t));
    int rc = STORE_OK;
    if (!upd || !matched) {
        snprintf(err, errlen, "mariadb: apply moves: out of memory");
        rc = STORE_ERROR;
    }
    bool exact = false;
    for (size_t i = 0; rc == STORE_OK && i < n_units;) {
        if (exact) {
            rc = apply_unit_exact(a, &units[i++], applied, err, errlen);
            continue;
        }
        size_t j = i, n_stmt = 0, rows = 0;
        a->sql.len = 0;
        while (j < n_units && (j == i || (rows + units[j].n <= MOVES_PER_STATEMENT &&
                                          a->sql.len < BATCH_BYTES))) {
            rows += units[j].n;
            sbuf_str(&a->sql, "SAVEPOINT kg_u");
            sbuf_i64(&a->sql, (long long)(j - i));
            sbuf_add(&a->sql, ";", 1);
            upd[n_stmt++] = -1;
            int st = sql_unit(a, &units[j]);
            if (st == 0)
                a->sql.oom = true;
            for (int k = 0; k < st; k++)
                upd[n_stmt++] = k == 0 ? (int)(j - i) : -1;
            j++;
        }
        rc = run_batch(a, upd, matched, err, errlen);
        size_t k = i;
        while (rc == STORE_OK && k < j && matched[k - i] == units[k].n)
            *applied += units[k++].n;
        if (rc != STORE_OK || k == j) {
            i = j;
            continue;
        }
        char sql[64];
        snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT kg_u%zu", k - i);
        rc = my_exec(a->m, sql, "roll back a changed unit", err, errlen);
        if (rc == STORE_OK)
            rc = apply_unit_exact(a, &units[k], applied, err, errlen);
        exact = true;
        i = k + 1;
    }
    free(upd);
    free(matched);
    return rc;
}

typedef struct {
    const kg_nametab *tab;
    const plan_move *moves;
    size_t n;
    const char *reason;
    store_apply_result *res;
} apply_args;

/* Sorts the moves by monitor id and cuts them into units, before the transaction starts so
 * no row is locked while this runs.  `order` receives the sorted pointers. */
static apply_unit *build_units(const plan_move *moves, size_t n, const plan_move **order,
                               size_t *n_units)
{
    apply_unit *units = malloc((n ? n : 1) * sizeof(*units));
    if (!units)
        return NULL;
    for (size_t i = 0; i < n; i++)
        order[i] = &moves[i];
    qsort(order, n, sizeof(*order), id_cmp);
    size_t u = 0;
    const plan_move *key[MAX_GROUPS];
    int g = 0;
    for (size_t i = 0; i < n; i++) {
        int k = 0;
        while (u > 0 && k < g && group_key_cmp(key[k], order[i]) != 0)
            k++;
        if (u == 0 || units[u - 1].n == MOVES_PER_STATEMENT || (k == g && g == MAX_GROUPS)) {
            units[u++] = (apply_unit){&order[i], 0};
            g = 0;
            k = 0;
        }
        if (k == g)
            key[g++] = order[i];
        units[u - 1].n++;
    }
    *n_units = u;
    return units;
}

static int op_apply_moves(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    apply_args *a = arg;
    a->res->applied = 0;
    a->res->skipped = 0;
    m->probe_valid = false; /* our own write: read the monitors again after it */
    const plan_move **order = malloc(a->n * sizeof(*order));
    size_t n_units = 0;
    apply_unit *units = order ? build_units(a->moves, a->n, order, &n_units) : NULL;
    apply_ctx c = {.m = m, .tab = a->tab};
    c.names.lit = calloc((size_t)(a->tab->n ? a->tab->n : 1), sizeof(char *));
    c.names.n = a->tab->n;
    c.ids = malloc(MOVES_PER_STATEMENT * sizeof(int64_t));
    c.all = malloc(MOVES_PER_STATEMENT * sizeof(int64_t));
    char *reason = malloc(2 * strlen(a->reason) + 3);
    int rc = STORE_OK;
    if (!units || !c.names.lit || !c.ids || !c.all || !reason) {
        snprintf(err, errlen, "mariadb: apply moves: out of memory");
        rc = STORE_ERROR;
        goto out;
    }
    reason[0] = '\'';
    unsigned long e = mysql_real_escape_string(m->db, reason + 1, a->reason,
                                               (unsigned long)strlen(a->reason));
    reason[e + 1] = '\'';
    reason[e + 2] = '\0';
    c.reason = reason;

    /* Several statements per round trip, for this operation only. */
    if (mysql_set_server_option(m->db, MYSQL_OPTION_MULTI_STATEMENTS_ON))
        rc = my_fail(m, "apply moves", err, errlen);
    if (rc == STORE_OK)
        rc = begin_write(s, err, errlen); /* START TRANSACTION + the fence, one call */
    size_t applied = 0;
    if (rc == STORE_OK) {
        rc = apply_units(&c, units, n_units, &applied, err, errlen);
        rc = my_end(m, rc, err, errlen);
    }
    if (!m->broken && mysql_set_server_option(m->db, MYSQL_OPTION_MULTI_STATEMENTS_OFF))
        record_error(m, mysql_errno(m->db));
    if (rc == STORE_OK) {
        a->res->applied = applied;
        a->res->skipped = a->n - applied;
    }
out:
    free(c.sql.p);
    free(c.ids);
    free(c.all);
    literals_free(&c.names);
    free(reason);
    free(units);
    free(order);
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

/* The lease row as the cluster committed it: on a Galera node the read first waits until
 * this node has applied every write committed anywhere before it (wsrep_sync_wait = 1). */
typedef struct {
    bool exists;
    bool free;          /* expired or released: anyone may take it */
    int64_t generation;
} lease_row;

#define LEASE_READ_SQL                                                                         \
    "SELECT generation, expires_at IS NULL OR expires_at <= UTC_TIMESTAMP(3)"                  \
    " FROM kumaguard_leader WHERE id = 1"

static int read_lease(my_store *m, lease_row *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    const char *sql = m->galera ? "SET STATEMENT wsrep_sync_wait = 1 FOR " LEASE_READ_SQL
                                : LEASE_READ_SQL;
    if (mysql_query(m->db, sql))
        return my_fail(m, "read lease", err, errlen);
    MYSQL_RES *res = mysql_store_result(m->db);
    if (!res)
        return my_fail(m, "read lease", err, errlen);
    MYSQL_ROW row = mysql_fetch_row(res);
    if (row && row[0]) {
        r->exists = true;
        r->generation = strtoll(row[0], NULL, 10);
        r->free = row[1] && row[1][0] == '1';
    }
    mysql_free_result(res);
    return STORE_OK;
}

/* The three compare-and-set writes.  Each is one autocommit statement: on Galera a losing
 * one fails certification as a whole; the server retries it once by itself
 * (wsrep_retry_autocommit), when it simply matches nothing, or we get 1213 and run_op
 * retries.  On a node that lags, the commit waits until the node has certified what came
 * before it.  Parameters: holder, ttl (microseconds), then the generation it expects (not for
 * create). */
static const char *const LEASE_RENEW_SQL =
    "UPDATE kumaguard_leader SET holder = ?,"
    " expires_at = UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, renewed_at = UTC_TIMESTAMP(3)"
    " WHERE id = 1 AND generation = ?";
static const char *const LEASE_TAKE_SQL =
    "UPDATE kumaguard_leader SET holder = ?, generation = generation + 1,"
    " expires_at = UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, renewed_at = UTC_TIMESTAMP(3)"
    " WHERE id = 1 AND generation = ?"
    " AND (expires_at IS NULL OR expires_at <= UTC_TIMESTAMP(3))";
static const char *const LEASE_CREATE_SQL =
    "INSERT IGNORE INTO kumaguard_leader (id, holder, generation, expires_at, renewed_at)"
    " VALUES (1, ?, 1, UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, UTC_TIMESTAMP(3))";

/* Runs one of them; *won = it matched the row it expected. */
static int lease_cas(my_store *m, const char *sql, const lease_args *a, int64_t expect_gen,
                     bool *won, char *err, size_t errlen)
{
    binds bs;
    binds_reset(&bs);
    bind_str(&bs, a->instance_id);
    bind_i64(&bs, (long long)a->ttl_ms * 1000);
    if (sql != LEASE_CREATE_SQL)
        bind_i64(&bs, expect_gen);
    uint64_t matched = 0;
    int rc = stmt_once_rows(m, sql, &bs, "write lease", &matched, err, errlen);
    *won = rc == STORE_OK && matched == 1;
    return rc;
}

static int op_lease(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    lease_args *a = arg;
    *a->leader = false;
    *a->generation = 0;
    m->lease_at_stake = true;
    bool won = false;
    int rc;
    if (m->lease_gen > 0) { /* ours unless someone took it: renew */
        rc = lease_cas(m, LEASE_RENEW_SQL, a, m->lease_gen, &won, err, errlen);
        if (rc != STORE_OK)
            return rc; /* keep lease_gen: a renewal that lost a race is retried */
        if (won) {
            *a->leader = true;
            *a->generation = m->lease_gen;
            return STORE_OK;
        }
        m->lease_gen = 0; /* another controller took it */
    }
    lease_row r;
    rc = read_lease(m, &r, err, errlen);
    if (rc != STORE_OK)
        return rc;
    *a->generation = r.generation;
    if (r.exists && !r.free)
        return STORE_OK; /* another controller holds it (or we did, in a former process) */
    rc = lease_cas(m, r.exists ? LEASE_TAKE_SQL : LEASE_CREATE_SQL, a, r.generation, &won, err,
                   errlen);
    if (rc != STORE_OK)
        return rc;
    if (won) {
        m->lease_gen = r.exists ? r.generation + 1 : 1;
        *a->leader = true;
        *a->generation = m->lease_gen;
        return STORE_OK;
    }
    rc = read_lease(m, &r, err, errlen); /* someone was faster: report their generation */
    *a->generation = r.generation;
    return rc;
}

static int my_lease(kg_store *s, const char *instance_id, int ttl_ms, bool *leader,
                    int64_t *generation, char *err, size_t errlen)
{
    *leader = false; /* also when the connection cannot even be made */
    *generation = 0;
    lease_args a = {instance_id, ttl_ms, leader, generation};
    return run_op(s, op_lease, &a, err, errlen);
}

static int op_release_lease(kg_store *s, void *arg, char *err, size_t errlen)
{
    (void)arg;
    my_store *m = s->impl;
    m->lease_at_stake = true;
    char sql[128];
    snprintf(sql, sizeof(sql),
             "UPDATE kumaguard_leader SET expires_at = NULL WHERE id = 1 AND generation = %lld",
             (long long)m->lease_gen);
    int rc = my_exec(m, sql, "release lease", err, errlen);
    if (rc == STORE_OK)
        m->lease_gen = 0;
    return rc;
}

static int my_release_lease(kg_store *s, char *err, size_t errlen)
{
    my_store *m = s->impl;
    if (m->lease_gen <= 0)
        return STORE_OK;
    return run_op(s, op_release_lease, NULL, err, errlen);
}

/* ---- first-run setup, per-monitor listing and operations ------------------------------ */

/* Uptime Kuma creates `user` with its other tables; kumaguard's --init-schema does not, so a
 * test or trial database without it is simply not gated. */
static int op_setup_status(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    store_setup_state *st = arg;
    int64_t n = 0;
    bool found;
    int rc = my_query_int(m,
                          "SELECT COUNT(*) FROM information_schema.tables"
                          " WHERE table_schema = DATABASE() AND table_name = 'user'",
                          &n, &found, "look for the user table", err, errlen);
    if (rc != STORE_OK)
        return rc;
    if (n == 0) {
        *st = STORE_SETUP_NOT_GATED;
        return STORE_OK;
    }
    rc = my_query_int(m, "SELECT EXISTS (SELECT 1 FROM `user`)", &n, &found,
                      "look for the first user", err, errlen);
    if (rc == STORE_OK)
        *st = n ? STORE_SETUP_COMPLETE : STORE_SETUP_PENDING;
    return rc;
}

static int my_setup_status(kg_store *s, store_setup_state *st, char *err, size_t errlen)
{
    *st = STORE_SETUP_NOT_GATED;
    return run_op(s, op_setup_status, st, err, errlen);
}

static const sql_dialect my_dialect = {
    .ours_expr = "(o.node_id IS NOT NULL AND CAST(o.node_id AS BINARY) ="
                 " CAST(m.assigned_node AS BINARY))",
    .since_expr = "CAST(UNIX_TIMESTAMP(o.created_at) AS SIGNED)",
};

/* Prepares sq and binds its parameters (any number of them, unlike `binds`). */
static int prepare_query(my_store *m, const sql_query *sq, MYSQL_STMT **out, const char *what,
                         char *err, size_t errlen)
{
    size_t n = (size_t)sq->n_binds;
    MYSQL_BIND *b = calloc(n ? n : 1, sizeof *b);
    unsigned long *len = calloc(n ? n : 1, sizeof *len);
    long long *num = calloc(n ? n : 1, sizeof *num);
    int rc = STORE_ERROR;
    if (!b || !len || !num) {
        snprintf(err, errlen, "mariadb: %s: out of memory", what);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const sql_bind *v = &sq->binds[i];
        if (v->is_text) {
            b[i].buffer_type = MYSQL_TYPE_STRING;
            b[i].buffer = (void *)v->text;
            len[i] = (unsigned long)strlen(v->text);
            b[i].buffer_length = len[i];
            b[i].length = &len[i];
        } else {
            num[i] = v->num;
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = &num[i];
        }
    }
    rc = stmt_prepare(m, sq->sql, out, what, err, errlen);
    if (rc == STORE_OK && (mysql_stmt_bind_param(*out, b) || mysql_stmt_execute(*out))) {
        rc = my_stmt_fail(m, *out, what, err, errlen);
        mysql_stmt_close(*out);
        *out = NULL;
    }
out:
    free(b);
    free(len);
    free(num);
    return rc;
}

/* Result columns of the row query, bound into one store_monitor_row at a time. */
typedef struct {
    MYSQL_BIND b[STORE_SQL_MONITOR_COLUMNS];
    unsigned long len[STORE_SQL_MONITOR_COLUMNS];
    my_bool null[STORE_SQL_MONITOR_COLUMNS];
    long long id, active, ours, since;
} row_binds;

static void bind_out_num(row_binds *rb, int col, long long *v)
{
    rb->b[col].buffer_type = MYSQL_TYPE_LONGLONG;
    rb->b[col].buffer = v;
    rb->b[col].is_null = &rb->null[col];
}

static void bind_out_str(row_binds *rb, int col, char *buf, size_t size)
{
    rb->b[col].buffer_type = MYSQL_TYPE_STRING;
    rb->b[col].buffer = buf;
    rb->b[col].buffer_length = (unsigned long)(size - 1);
    rb->b[col].length = &rb->len[col];
    rb->b[col].is_null = &rb->null[col];
}

/* Terminates a fetched string column (truncated to its buffer when longer). */
static void end_str(row_binds *rb, int col, char *buf, size_t size)
{
    unsigned long l = rb->null[col] ? 0 : rb->len[col];
    buf[l < size - 1 ? l : size - 1] = '\0';
}

static int fetch_rows(my_store *m, MYSQL_STMT *st, store_monitor_row *rows, size_t cap,
                      size_t *n, char *err, size_t errlen)
{
    row_binds rb;
    store_monitor_row cur;
    memset(&rb, 0, sizeof rb);
    memset(&cur, 0, sizeof cur);
    bind_out_num(&rb, 0, &rb.id);
    bind_out_str(&rb, 1, cur.name, sizeof cur.name);
    bind_out_num(&rb, 2, &rb.active);
    bind_out_str(&rb, 3, cur.home, sizeof cur.home);
    bind_out_str(&rb, 4, cur.over, sizeof cur.over);
    bind_out_num(&rb, 5, &rb.ours);
    bind_out_str(&rb, 6, cur.over_reason, sizeof cur.over_reason);
    bind_out_num(&rb, 7, &rb.since);
    if (mysql_stmt_bind_result(st, rb.b) || mysql_stmt_store_result(st))
        return my_stmt_fail(m, st, "query monitors", err, errlen);
    int f;
    while ((f = mysql_stmt_fetch(st)) == 0 || f == MYSQL_DATA_TRUNCATED) {
        if (*n >= cap)
            continue;
        end_str(&rb, 1, cur.name, sizeof cur.name);
        end_str(&rb, 3, cur.home, sizeof cur.home);
        end_str(&rb, 4, cur.over, sizeof cur.over);
        end_str(&rb, 6, cur.over_reason, sizeof cur.over_reason);
        store_monitor_row *r = &rows[(*n)++];
        *r = cur;
        r->id = rb.id;
        r->active = rb.active != 0;
        r->has_home = !rb.null[3];
        r->has_over = !rb.null[4];
        r->ours = rb.ours != 0;
        if (!r->ours)
            r->over_reason[0] = '\0';
        r->over_since_ms = r->ours && !rb.null[7] ? rb.since * 1000 : 0;
    }
    if (f != MYSQL_NO_DATA)
        return my_stmt_fail(m, st, "query monitors", err, errlen);
    return STORE_OK;
}

typedef struct {
    const store_monitor_query *q;
    store_monitor_page *out;
} query_args;

static int op_query_monitors(kg_store *s, void *arg, char *err, size_t errlen)
{
    my_store *m = s->impl;
    query_args *a = arg;
    const store_monitor_query *q = a->q;
    store_monitor_page *out = a->out;
    sql_query sq;
    if (store_sql_monitor_query(q, &my_dialect, false, &sq, err, errlen) != 0)
        return STORE_ERROR;
    store_monitor_row *rows = calloc((size_t)q->limit + 1, sizeof *rows);
    MYSQL_STMT *st = NULL;
    size_t n = 0;
    int rc = STORE_ERROR;
    if (!rows)
        snprintf(err, errlen, "mariadb: query monitors: out of memory");
    else
        rc = prepare_query(m, &sq, &st, "query monitors", err, errlen);
    if (rc == STORE_OK)
        rc = fetch_rows(m, st, rows, (size_t)q->limit + 1, &n, err, errlen);
    if (st)
        mysql_stmt_close(st);
    store_sql_free(&sq);
    if (rc == STORE_OK && q->want_total) {
        st = NULL;
        if (store_sql_monitor_query(q, &my_dialect, true, &sq, err, errlen) != 0)
            rc = STORE_ERROR;
        else
            rc = prepare_query(m, &sq, &st, "count monitors", err, errlen);
        if (rc == STORE_OK) {
            long long total = 0;
            MYSQL_BIND b;
            memset(&b, 0, sizeof b);
            b.buffer_type = MYSQL_TYPE_LONGLONG;
            b.buffer = &total;
            if (mysql_stmt_bind_result(st, &b) || mysql_stmt_store_result(st) ||
                mysql_stmt_fetch(st) != 0)
                rc = my_stmt_fail(m, st, "count monitors", err, errlen);
            out->total = total;
        }
        if (st)
            mysql_stmt_close(st);
        store_sql_free(&sq);
    }
    if (rc != STORE_OK) {
        free(rows);
        return rc;
    }
    store_page_take(out, rows, n, q->limit);
    return STORE_OK;
}

static int my_query_monitors(kg_store *s, const store_monitor_query *q, store_monitor_page *out,
                             char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->total = -1;
    query_args a = {q, out};
    return run_op(s, op_query_monitors, &a, err, errlen);
}

typedef struct {
    const store_monitor_change *ch;
    size_t n;
    const char *reason;
    size_t *changed;
} changes_args;

enum { CH_GUARD, CH_UPDATE, CH_FORGET, CH_RECORD, CH_STATEMENTS };

/* One change inside the transaction: the guard locks the row and checks it still holds what
 * the caller read, then the row (when a column changes), then its override record. */
static int apply_change(my_store *m, MYSQL_STMT *const st[CH_STATEMENTS],
                        const store_monitor_change *c, const char *reason, size_t *done,
                        char *err, size_t errlen)
{
    binds bs;
    binds_reset(&bs);
    bind_i64(&bs, c->id);
    bind_str(&bs, c->expect_home);
    bind_str(&bs, c->expect_over);
    int rc = stmt_run(m, st[CH_GUARD], &bs, "check monitor", err, errlen);
    if (rc == STORE_OK && mysql_stmt_store_result(st[CH_GUARD]))
        rc = my_stmt_fail(m, st[CH_GUARD], "check monitor", err, errlen);
    if (rc != STORE_OK)
        return rc;
    my_ulonglong found = mysql_stmt_num_rows(st[CH_GUARD]);
    mysql_stmt_free_result(st[CH_GUARD]);
    if (found == 0) {
        snprintf(err, errlen, "monitor %lld changed since it was read", (long long)c->id);
        return STORE_CONFLICT;
    }
    if (store_change_writes_row(c)) {
        binds_reset(&bs);
        bind_str(&bs, c->new_home);
        bind_str(&bs, c->new_over);
        bind_i64(&bs, c->id);
        if ((rc = stmt_run(m, st[CH_UPDATE], &bs, "change monitor", err, errlen)) != STORE_OK)
            return rc;
        (*done)++;
    }
    binds_reset(&bs);
    bind_i64(&bs, c->id);
    if (c->record == STORE_RECORD_DELETE)
        return stmt_run(m, st[CH_FORGET], &bs, "forget override record", err, errlen);
    if (c->record == STORE_RECORD_SET) {
        bind_str(&bs, c->new_over);
        bind_str(&bs, c->new_home);
        bind_str(&bs, reason);
        return stmt_run(m, st[CH_RECORD], &bs, "record override", err, errlen);
    }
    return STORE_OK;
}

static int op_apply_monitor_changes(kg_store *s, void *arg, char *err, size_t errlen)
{
    static const char *const sql[CH_STATEMENTS] = {
        [CH_GUARD] = "SELECT id FROM monitor WHERE id = ? AND node_id <=> ?"
                     " AND assigned_node <=> ? FOR UPDATE",
        [CH_UPDATE] = "UPDATE monitor SET node_id = ?, assigned_node = ? WHERE id = ?",
        [CH_FORGET] = "DELETE FROM kumaguard_override WHERE monitor_id = ?",
        [CH_RECORD] = "INSERT INTO kumaguard_override (monitor_id, node_id, home_node, reason,"
                      " created_at) VALUES (?, ?, ?, ?, UTC_TIMESTAMP()) ON DUPLICATE KEY UPDATE"
                      " node_id = VALUES(node_id), home_node = VALUES(home_node),"
                      " reason = VALUES(reason), created_at = VALUES(created_at)",
    };
    my_store *m = s->impl;
    changes_args *a = arg;
    *a->changed = 0;
    int rc = begin_write(s, err, errlen);
    if (rc != STORE_OK)
        return rc;
    MYSQL_STMT *st[CH_STATEMENTS] = {0};
    for (int k = 0; rc == STORE_OK && k < CH_STATEMENTS; k++)
        rc = stmt_prepare(m, sql[k], &st[k], "prepare monitor change", err, errlen);
    size_t done = 0;
    for (size_t i = 0; rc == STORE_OK && i < a->n; i++)
        rc = apply_change(m, st, &a->ch[i], a->reason, &done, err, errlen);
    for (int k = 0; k < CH_STATEMENTS; k++)
        if (st[k])
            mysql_stmt_close(st[k]);
    rc = my_end(m, rc, err, errlen);
    if (rc == STORE_OK)
        *a->changed = done;
    return rc;
}

static int my_apply_monitor_changes(kg_store *s, const store_monitor_change *ch, size_t n,
                                    const char *reason, size_t *changed, char *err,
                                    size_t errlen)
{
    *changed = 0;
    changes_args a = {ch, n, reason, changed};
    ((my_store *)s->impl)->probe_valid = false; /* our own write: read the monitors again */
    return run_op(s, op_apply_monitor_changes, &a, err, errlen);
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
    .monitors_changed = my_monitors_changed,
    .apply_moves = my_apply_moves,
    .forget_stale_overrides = my_forget_stale_overrides,
    .append_event = my_append_event,
    .prune_events = my_prune_events,
    .lease = my_lease,
    .release_lease = my_release_lease,
    .setup_status = my_setup_status,
    .query_monitors = my_query_monitors,
    .apply_monitor_changes = my_apply_monitor_changes,
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
