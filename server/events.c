/* events.c — persistent event history in the local state cache <state dir>/state.db.
 *
 * Owns: state.db, its schema, and the history writer thread.  The controller hands events
 * over with events_submit (ids are given at once, the INSERT happens on the writer thread, so a
 * slow disk never delays a decision); query callers (HTTP threads) open a short-lived
 * read-only connection each, so no handle or lock is shared with the writer.
 *
 * The journal is a rollback journal (TRUNCATE), not WAL: WAL maps a shared-memory file, and a
 * full or read-only disk under a mapped page ends the process with SIGBUS; with a rollback
 * journal the same disk only makes writes fail, which is reported (events_health) and shown
 * as a degraded /health.
 *
 * Must not: touch the cluster database. */
#include "events.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "clock.h"

static sqlite3 *db;             /* the writer's connection (opened by events_open) */
static sqlite3_stmt *ins;
static char db_path[1024];
static int64_t last_id;         /* under H.lock once the writer runs */

#define QUEUE_MAX 4096          /* events waiting for the disk; older ones are dropped */

/* The writer thread and what it shares with the controller, under H.lock. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stop;
    kg_event *queue;            /* ring of QUEUE_MAX */
    int head, n;
    bool writing;               /* the writer holds an event taken from the queue */
    events_health_t health;
} H = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const char schema[] =
    "PRAGMA journal_mode=TRUNCATE;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS event ("
    " id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL, node TEXT,"
    " from_node TEXT, to_node TEXT, count INTEGER NOT NULL DEFAULT 0,"
    " duration_ms INTEGER NOT NULL DEFAULT 0, reason TEXT);"
    "CREATE INDEX IF NOT EXISTS event_ts ON event(ts_ms);"
    "CREATE INDEX IF NOT EXISTS event_node ON event(node, id);";

static void set_health_locked(bool ok, const char *what, const char *msg)
{
    if (ok) {
        H.health.ok = true;
        return;
    }
    H.health.ok = false;
    H.health.failures++;
    H.health.last_failure_ms = 0; /* filled by the caller with the event time */
    snprintf(H.health.error, sizeof H.health.error, "%s: %s", what, msg ? msg : "?");
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s && *s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* Writer thread only. */
static int insert_event(const kg_event *ev)
{
    if (!db || !ins)
        return SQLITE_MISUSE;
    sqlite3_reset(ins);
    sqlite3_bind_int64(ins, 1, ev->id);
    sqlite3_bind_int64(ins, 2, ev->ts_ms);
    sqlite3_bind_text(ins, 3, event_kind_name(ev->kind), -1, SQLITE_STATIC);
    bind_text_or_null(ins, 4, ev->node);
    bind_text_or_null(ins, 5, ev->from);
    bind_text_or_null(ins, 6, ev->to);
    sqlite3_bind_int(ins, 7, ev->count);
    sqlite3_bind_int64(ins, 8, ev->duration_ms);
    bind_text_or_null(ins, 9, ev->reason);
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Writer thread only: deletes history older than before_ms; rows deleted or -1. */
static int prune_rows(int64_t before_ms)
{
    sqlite3_stmt *st;
    if (!db || sqlite3_prepare_v2(db, "DELETE FROM event WHERE ts_ms < ?", -1, &st, NULL) !=
                   SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, before_ms);
    int rc = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(db) : -1;
    sqlite3_finalize(st);
    return rc;
}

static int64_t prune_before; /* under H.lock: > 0 = a prune is asked for */

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&H.lock);
    for (;;) {
        if (H.n == 0 && !prune_before) {
            if (H.stop)
                break;
            pthread_cond_wait(&H.cond, &H.lock);
            continue;
        }
        if (H.n > 0) {
            kg_event ev = H.queue[H.head];
            H.head = (H.head + 1) % QUEUE_MAX;
            H.n--;
            H.writing = true;
            pthread_mutex_unlock(&H.lock);
            int rc = insert_event(&ev);
            pthread_mutex_lock(&H.lock);
            H.writing = false;
            if (rc == SQLITE_OK) {
                H.health.written++;
                set_health_locked(true, NULL, NULL);
            } else {
                set_health_locked(false, "cannot write the local history",
                                  db ? sqlite3_errstr(rc) : "not open");
                H.health.last_failure_ms = ev.ts_ms;
                H.health.lost++;
            }
        } else {
            int64_t before = prune_before;
            prune_before = 0;
            pthread_mutex_unlock(&H.lock);
            int n = prune_rows(before);
            pthread_mutex_lock(&H.lock);
            if (n < 0)
                set_health_locked(false, "cannot prune the local history",
                                  db ? sqlite3_errmsg(db) : "not open");
            else
                H.health.pruned += n;
        }
        pthread_cond_broadcast(&H.cond); /* events_flush waits for an empty queue */
    }
    pthread_mutex_unlock(&H.lock);
    return NULL;
}

int events_open(const char *state_dir, char *err, size_t errlen)
{
    if (mkdir(state_dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create state dir %s: %s", state_dir, strerror(errno));
        return -1;
    }
    snprintf(db_path, sizeof db_path, "%s/state.db", state_dir);
    if (sqlite3_open(db_path, &db) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", db_path, db ? sqlite3_errmsg(db) : "?");
        events_close();
        return -1;
    }
    sqlite3_busy_timeout(db, 2000);
    char *msg = NULL;
    if (sqlite3_exec(db, schema, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO event(id, ts_ms, kind, node, from_node, to_node, count,"
                           " duration_ms, reason) VALUES (?,?,?,?,?,?,?,?,?)",
                           -1, &ins, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "state cache %s: %s", db_path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        events_close();
        return -1;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(id),0) FROM event", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            last_id = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    H.queue = calloc(QUEUE_MAX, sizeof *H.queue);
    memset(&H.health, 0, sizeof H.health);
    H.health.ok = true;
    H.head = H.n = 0;
    H.stop = false;
    prune_before = 0;
    if (!H.queue || kg_cond_init(&H.cond) != 0) {
        snprintf(err, errlen, "state cache: out of memory");
        events_close();
        return -1;
    }
    if (pthread_create(&H.thread, NULL, writer_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the history thread: %s", strerror(errno));
        pthread_cond_destroy(&H.cond);
        events_close();
        return -1;
    }
    H.started = true;
    return 0;
}

void events_close(void)
{
    if (H.started) {
        /* the queue is written out first (bounded by the disk; a failing disk fails fast) */
        pthread_mutex_lock(&H.lock);
        H.stop = true;
        pthread_cond_broadcast(&H.cond);
        pthread_mutex_unlock(&H.lock);
        pthread_join(H.thread, NULL);
        pthread_cond_destroy(&H.cond);
        H.started = false;
    }
    free(H.queue);
    H.queue = NULL;
    if (ins)
        sqlite3_finalize(ins);
    ins = NULL;
    if (db)
        sqlite3_close(db);
    db = NULL;
}

int64_t events_last_id(void)
{
    pthread_mutex_lock(&H.lock);
    int64_t v = last_id;
    pthread_mutex_unlock(&H.lock);
    return v;
}

void events_prune(int64_t before_ms)
{
    pthread_mutex_lock(&H.lock);
    if (H.started) {
        prune_before = before_ms;
        pthread_cond_signal(&H.cond);
    }
    pthread_mutex_unlock(&H.lock);
}

int events_submit(kg_event *ev)
{
    pthread_mutex_lock(&H.lock);
    if (ev->id == 0)
        ev->id = ++last_id;
    else if (ev->id > last_id)
        last_id = ev->id;
    if (!H.started) {
        H.health.lost++;
        pthread_mutex_unlock(&H.lock);
        return -1;
    }
    int rc = 0;
    if (H.n == QUEUE_MAX) { /* the disk cannot keep up: drop the oldest, count it */
        H.head = (H.head + 1) % QUEUE_MAX;
        H.n--;
        H.health.lost++;
        H.health.ok = false;
        snprintf(H.health.error, sizeof H.health.error,
                 "the local history cannot keep up: events were dropped");
        rc = -1;
    }
    H.queue[(H.head + H.n) % QUEUE_MAX] = *ev;
    H.n++;
    pthread_cond_signal(&H.cond);
    pthread_mutex_unlock(&H.lock);
    return rc;
}

bool events_flush(int timeout_ms)
{
    struct timespec dl = kg_deadline_in(timeout_ms);
    pthread_mutex_lock(&H.lock);
    while (H.started && (H.n > 0 || H.writing))
        if (pthread_cond_timedwait(&H.cond, &H.lock, &dl) != 0)
            break;
    bool empty = H.n == 0 && !H.writing;
    pthread_mutex_unlock(&H.lock);
    return empty;
}

int events_append(kg_event *ev)
{
    if (events_submit(ev) != 0 || !events_flush(5000))
        return -1;
    events_health_t h;
    events_health(&h);
    return h.ok ? 0 : -1;
}

void events_health(events_health_t *out)
{
    pthread_mutex_lock(&H.lock);
    *out = H.health;
    out->queued = H.n;
    pthread_mutex_unlock(&H.lock);
}

static void copy_col(char *dst, size_t n, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

static void row_to_event(sqlite3_stmt *st, kg_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->id = sqlite3_column_int64(st, 0);
    ev->ts_ms = sqlite3_column_int64(st, 1);
    const unsigned char *k = sqlite3_column_text(st, 2);
    int kind = event_kind_parse(k ? (const char *)k : "");
    ev->kind = kind < 0 ? EV_OPERATOR : (kg_event_kind)kind;
    copy_col(ev->node, sizeof ev->node, st, 3);
    copy_col(ev->from, sizeof ev->from, st, 4);
    copy_col(ev->to, sizeof ev->to, st, 5);
    ev->count = sqlite3_column_int(st, 6);
    ev->duration_ms = sqlite3_column_int64(st, 7);
    copy_col(ev->reason, sizeof ev->reason, st, 8);
}

#define EVENT_COLS "id, ts_ms, kind, node, from_node, to_node, count, duration_ms, reason"

int events_load_recent(kg_event *out, int limit)
{
    if (!db || limit <= 0)
        return 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT * FROM (SELECT " EVENT_COLS
                           " FROM event ORDER BY id DESC LIMIT ?) ORDER BY id ASC",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_int(st, 1, limit);
    int n = 0;
    while (n < limit && sqlite3_step(st) == SQLITE_ROW)
        row_to_event(st, &out[n++]);
    sqlite3_finalize(st);
    return n;
}

int events_query_run(const events_query *q, kg_event **out, int *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (!db_path[0]) {
        snprintf(err, errlen, "history is not open");
        return -1;
    }
    int limit = q->limit < 1 ? 50 : (q->limit > 1000 ? 1000 : q->limit);
    sqlite3 *rd = NULL;
    if (sqlite3_open_v2(db_path, &rd, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open history: %s", rd ? sqlite3_errmsg(rd) : "?");
        sqlite3_close(rd);
        return -1;
    }
    sqlite3_busy_timeout(rd, 2000);
    /* Every filter is a bound parameter; a NULL parameter disables its condition. */
    const char *sql = "SELECT " EVENT_COLS " FROM event WHERE (?1 IS NULL OR node = ?1)"
                      " AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR ts_ms >= ?3)"
                      " AND (?4 IS NULL OR ts_ms <= ?4) AND (?5 IS NULL OR id < ?5)"
                      " ORDER BY id DESC LIMIT ?6";
    sqlite3_stmt *st = NULL;
    int rc = -1;
    kg_event *res = calloc((size_t)limit, sizeof *res);
    if (!res) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (sqlite3_prepare_v2(rd, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "history query: %s", sqlite3_errmsg(rd));
        goto done;
    }
    if (q->node && *q->node)
        sqlite3_bind_text(st, 1, q->node, -1, SQLITE_TRANSIENT);
    if (q->kind >= 0)
        sqlite3_bind_text(st, 2, event_kind_name((kg_event_kind)q->kind), -1, SQLITE_STATIC);
    if (q->since_ms > 0)
        sqlite3_bind_int64(st, 3, q->since_ms);
    if (q->until_ms > 0)
        sqlite3_bind_int64(st, 4, q->until_ms);
    if (q->before_id > 0)
        sqlite3_bind_int64(st, 5, q->before_id);
    sqlite3_bind_int(st, 6, limit);
    int got = 0, step = SQLITE_DONE;
    while (got < limit && (step = sqlite3_step(st)) == SQLITE_ROW)
        row_to_event(st, &res[got++]);
    /* A page cut short by an error (corrupt file, I/O error, lock timeout) must not pass for
     * the end of the history. */
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        snprintf(err, errlen, "history query: %s", sqlite3_errmsg(rd));
        goto done;
    }
    *out = res;
    *n = got;
    res = NULL;
    rc = 0;
done:
    free(res);
    sqlite3_finalize(st);
    sqlite3_close(rd);
    return rc;
}
