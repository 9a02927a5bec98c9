/* store.h — the cluster database interface, with two backends: store_sqlite.c (embedded
 * default) and store_mariadb.c (the shared database of a real cluster).
 *
 * A kg_store is not thread safe: the database applier (db_worker.c) owns the controller's
 * store; another thread that needs the database (the setup watcher, the per-monitor listing of
 * the HTTP API) opens a store of its own with store_open() and only reads through it.  Every
 * write operation is one transaction; moves are applied set-based (statements over sets of
 * rows, never one per move), each row guarded by the values the plan saw (node_id,
 * assigned_node and active), so a row a Kuma node changed meanwhile is skipped, not clobbered,
 * and a monitor switched off meanwhile is never given an override.  When `fence_generation` > 0
 * every write transaction begins with the fence: it *writes* the kumaguard_leader row where
 * that generation still holds (so the database arbitrates it against a takeover: a row lock on
 * one server, certification on Galera) and aborts with STORE_FENCED when it does not, or when
 * the database says another node's write won (Galera 1213/1180/1047).
 *
 * Owns: connections, SQL text, schema creation for kumaguard_* tables (and node/monitor only
 * with init_schema), and which lease generation it took (kept across reconnects).  Must not:
 * decide what to move, log on hot paths, or keep cluster state beyond the connection. */
#ifndef KG_STORE_H
#define KG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assign.h"
#include "config.h"
#include "nametab.h"
#include "snapshot.h"
#include "types.h"

enum {
    STORE_OK = 0,
    STORE_ERROR = -1,        /* SQL or connection error; err says which */
    STORE_FENCED = -2,       /* lease lost: the generation changed (another controller leads)
                                or another database node's write won; not a database outage */
    STORE_SCHEMA_MISSING = -3,/* node/monitor tables not there yet (MariaDB without init) */
    STORE_CONFLICT = -4      /* apply_monitor_changes: a row changed since it was read; nothing
                                was written */
};

/* ---- first-run setup, per-monitor listing and operations ------------------------------- */

/* Whether the Kuma cluster's first user exists: before it does, only the primary node can
 * create it and every node answers reconcile calls with 401 (setup_watch.h). */
typedef enum {
    STORE_SETUP_NOT_GATED = 0, /* no `user` table (embedded SQLite, --init-schema): never gated */
    STORE_SETUP_PENDING,       /* `user` exists and is empty: only the primary can set up */
    STORE_SETUP_COMPLETE       /* `user` has a row */
} store_setup_state;

#define KG_MONITOR_NAME_MAX 600 /* monitor.name VARCHAR(150), up to 4 bytes per character */
#define KG_OVERRIDE_MAX 255     /* monitor.assigned_node VARCHAR(255) */

/* One monitor as the per-monitor API shows it. */
typedef struct {
    int64_t id;
    char name[KG_MONITOR_NAME_MAX + 1];
    bool active;
    bool has_home, has_over;
    char home[KG_OVERRIDE_MAX + 1];       /* monitor.node_id (VARCHAR(50) in Kuma) */
    char over[KG_OVERRIDE_MAX + 1];       /* monitor.assigned_node */
    bool ours;                            /* the override is kumaguard's (kumaguard_override) */
    char over_reason[KG_REASON_MAX];      /* kumaguard_override.reason when ours */
    int64_t over_since_ms;                /* kumaguard_override.created_at when ours, else 0 */
} store_monitor_row;

typedef enum {
    STORE_OVR_ANY = 0,
    STORE_OVR_NONE,     /* assigned_node IS NULL */
    STORE_OVR_OURS,     /* kumaguard's override */
    STORE_OVR_PIN,      /* an override kumaguard did not write: an operator's pin */
    STORE_OVR_NOT_PIN   /* none or ours */
} store_override_filter;

/* Filters of query_monitors; every value is bound as a parameter, never spliced into SQL. */
typedef struct {
    const int64_t *ids;       /* only these ids (at most 1000); NULL = any */
    size_t n_ids;
    const char *node;         /* effective node (COALESCE(assigned_node, node_id)) = node */
    const char *home;         /* node_id = home */
    const char *search;       /* name contains this (case-insensitive, wildcards are literal),
                                 or the id equals it when it is all digits */
    int active;               /* -1 any, 0 inactive, 1 active */
    store_override_filter override;
    int live;                 /* -1 any; 1 effective node in live[]; 0 effective node set and
                                 not in live[] (runs nowhere reachable) */
    const char *const *live_nodes;
    size_t n_live;
    bool unassigned;          /* node_id and assigned_node both NULL */
    int64_t after_id;         /* keyset paging: ids > after_id */
    int limit;                /* 1..1000 rows */
    bool want_total;          /* also count every match (a second query) */
} store_monitor_query;

typedef struct {
    store_monitor_row *rows;  /* sorted by id */
    size_t n;
    bool more;                /* a further page exists */
    int64_t total;            /* matches ignoring after_id/limit, -1 when not counted */
} store_monitor_page;

/* What happens to a monitor's kumaguard_override record along with a change. */
typedef enum {
    STORE_RECORD_KEEP = 0,
    STORE_RECORD_DELETE,      /* the override is no longer ours (pin, unpin, new home) */
    STORE_RECORD_SET          /* the new override is ours: reverted like a failover */
} store_record_action;

/* One guarded per-monitor change (NULL strings are SQL NULL). */
typedef struct {
    int64_t id;
    const char *expect_home, *expect_over; /* the row must still hold these */
    const char *new_home, *new_over;
    store_record_action record;
} store_monitor_change;

typedef struct {
    /* One byte more than an id may have: a longer node_id arrives as KG_NODE_ID_MAX + 1
     * characters and is refused as too long, instead of being cut to a valid-looking id. */
    char id[KG_NODE_ID_MAX + 2];
    char name[KG_NODE_NAME_MAX + 1];
    char host[KG_HOST_MAX + 1];
    char status[21];
    bool is_primary;
    bool active;
    int64_t last_seen_ms;    /* 0 = NULL */
} store_node_row;

typedef struct {
    char id[KG_NODE_ID_MAX + 1];
    const char *status;      /* node.status value to write */
    int64_t last_seen_ms;    /* > 0: also write last_seen (UTC) */
} store_node_state;

typedef struct {
    plan_monitor *monitors;  /* sorted by id; home/over index into the caller's nametab */
    size_t n;
} store_monitor_set;

typedef struct {
    size_t applied;          /* rows changed */
    size_t skipped;          /* rows whose guard no longer matched */
} store_apply_result;

typedef struct kg_store kg_store;

typedef struct {
    const char *backend;     /* "sqlite" or "mariadb" */
    void (*close)(kg_store *s);
    int (*ping)(kg_store *s, char *err, size_t errlen);
    /* Creates kumaguard_* tables; node/monitor too when init_schema (always on SQLite).
     * STORE_SCHEMA_MISSING when node/monitor are absent and init_schema is false. */
    int (*ensure_schema)(kg_store *s, bool init_schema, char *err, size_t errlen);
    int (*load_nodes)(kg_store *s, store_node_row **rows, size_t *n, char *err, size_t errlen);
    /* Static nodes from the configuration: insert, or update host of an existing row. */
    int (*upsert_node)(kg_store *s, const char *id, const char *host, char *err, size_t errlen);
    int (*write_node_states)(kg_store *s, const store_node_state *st, size_t n, char *err,
                             size_t errlen);
    /* All monitors (active or not) with our-override flags; node names interned into tab. */
    int (*load_monitors)(kg_store *s, kg_nametab *tab, store_monitor_set *out, char *err,
                         size_t errlen);
    /* A cheap probe, so an unchanged monitor table is not read again: *changed = false only
     * when neither `monitor` nor kumaguard_override can have changed since this store's last
     * successful load_monitors (a monitor added, deleted, switched or re-pinned by anyone, or
     * moved by us); true when they may have, or when the store cannot tell.  Costs no scan of
     * either table (MariaDB: InnoDB's in-memory update time of the two tables; SQLite:
     * PRAGMA data_version). */
    int (*monitors_changed)(kg_store *s, bool *changed, char *err, size_t errlen);
    /* Applies moves[0..n) in one transaction (see header comment).  `what` labels the
     * operation for kumaguard_override.reason ("failover", "revert", ...). */
    int (*apply_moves)(kg_store *s, const kg_nametab *tab, const plan_move *moves, size_t n,
                       const char *what, store_apply_result *res, char *err, size_t errlen);
    /* Drops kumaguard_override records whose override someone else changed since we wrote
     * it, in a fenced write (the leader's job: STORE_FENCED without a fence generation).
     * load_monitors never writes; such a record is simply not "ours" when read. */
    int (*forget_stale_overrides)(kg_store *s, size_t *forgotten, char *err, size_t errlen);
    int (*append_event)(kg_store *s, const kg_event *ev, char *err, size_t errlen);
    /* Deletes kumaguard_event rows older than before_ms (history retention), at most 10,000
     * per call so a large backlog never holds a long transaction. */
    int (*prune_events)(kg_store *s, int64_t before_ms, char *err, size_t errlen);
    /* Leader lease: takes the lease when it is free (expired or released), renews it when
     * ours.  STORE_OK: *leader says whether we hold it; *generation is ours, or the current
     * holder's.  The generation grows each time the lease is *taken*; renewing keeps it, also
     * across reconnects.  A grant lasts ttl_ms from when the database ran the call, by the
     * database's clock: the caller must stop acting as leader ttl_ms (less a margin for clock
     * skew between database nodes) after it *sent* its last successful call (lease.h).
     * STORE_FENCED: lost in a conflict with another database node (*leader false; the
     * database works, call again).  STORE_ERROR: could not ask (*leader false).
     * SQLite: an flock beside the file; always the same generation. */
    int (*lease)(kg_store *s, const char *instance_id, int ttl_ms, bool *leader,
                 int64_t *generation, char *err, size_t errlen);
    /* Gives up a lease this store holds (clean shutdown), so another controller can take it
     * at once instead of after the TTL.  No-op when it holds none. */
    int (*release_lease)(kg_store *s, char *err, size_t errlen);

    /* ---- first-run setup, per-monitor listing and operations ---- */
    /* First-run setup: SQLite is never gated; MariaDB looks for a `user` table and a row. */
    int (*setup_status)(kg_store *s, store_setup_state *st, char *err, size_t errlen);
    /* A page of monitors (read only; safe on a store opened by any thread for itself).  The
     * caller frees with store_free_page. */
    int (*query_monitors)(kg_store *s, const store_monitor_query *q, store_monitor_page *out,
                          char *err, size_t errlen);
    /* Applies ch[0..n) in one fenced transaction, all or nothing: STORE_CONFLICT (nothing
     * written) when any row no longer holds its expect_* values.  *changed = rows written.
     * `reason` goes into kumaguard_override.reason for STORE_RECORD_SET. */
    int (*apply_monitor_changes)(kg_store *s, const store_monitor_change *ch, size_t n,
                                 const char *reason, size_t *changed, char *err, size_t errlen);
} kg_store_ops;

struct kg_store {
    const kg_store_ops *ops;
    int64_t fence_generation; /* 0 = no fencing check */
    void *impl;
};

/* Opens the backend the configuration names (DB_HOST set = MariaDB, else SQLite). */
kg_store *store_open(const kg_config *cfg, char *err, size_t errlen);
kg_store *store_sqlite_open(const char *path, char *err, size_t errlen);
/* Connects lazily: NULL only on out of memory; an unreachable or misconfigured database is
 * reported (STORE_ERROR + err) by every operation until it answers, then it just works. */
kg_store *store_mariadb_open(const kg_config *cfg, char *err, size_t errlen);
void store_close(kg_store *s);
void store_free_monitors(store_monitor_set *m);
void store_free_page(store_monitor_page *p);
/* Both backends: whether a change rewrites the monitor row (else only its record changes). */
bool store_change_writes_row(const store_monitor_change *c);
/* Both backends: rows[0..n) were fetched with LIMIT limit + 1; hands limit of them to out and
 * says whether more exist. */
void store_page_take(store_monitor_page *out, store_monitor_row *rows, size_t n, int limit);
/* Both backends call this before applying: STORE_ERROR naming the first move with an unknown
 * kind or a node index that is not -1/interned (a target is required except for
 * CLEAR_OVERRIDE), or that would give an inactive monitor a node (expect_active 0 is only
 * valid for CLEAR_OVERRIDE). */
int store_check_moves(const kg_nametab *tab, const plan_move *moves, size_t n, char *err,
                      size_t errlen);

#endif
