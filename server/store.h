/* store.h — the cluster database interface, with two backends: store_sqlite.c (embedded
 * default) and store_mariadb.c (the shared database of a real cluster).
 *
 * Only the controller thread uses a store; it is not thread safe.  Every write operation is one
 * transaction; moves are applied set-based (statements over sets of rows, never one per move),
 * each row guarded by the values the plan saw (node_id, assigned_node and active), so a row a
 * Kuma node changed meanwhile is skipped, not clobbered, and a monitor switched off meanwhile
 * is never given an override.  When `fence_generation` > 0 every write transaction first checks
 * that kumaguard_leader still holds that generation and aborts with STORE_FENCED otherwise.
 *
 * Owns: connections, SQL text, schema creation for kumaguard_* tables (and node/monitor only
 * with init_schema).  Must not: decide what to move, log on hot paths, or keep cluster state
 * beyond the connection. */
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
    STORE_FENCED = -2,       /* leader generation changed: another controller leads */
    STORE_SCHEMA_MISSING = -3/* node/monitor tables not there yet (MariaDB without init) */
};

typedef struct {
    char id[KG_NODE_ID_MAX + 1];
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
    int (*append_event)(kg_store *s, const kg_event *ev, char *err, size_t errlen);
    /* Deletes kumaguard_event rows older than before_ms (history retention), at most 10,000
     * per call so a large backlog never holds a long transaction. */
    int (*prune_events)(kg_store *s, int64_t before_ms, char *err, size_t errlen);
    /* Leader lease.  Sets *leader and *generation (a new, larger generation each time this
     * instance newly becomes leader).  SQLite: always leader, generation 1. */
    int (*lease)(kg_store *s, const char *instance_id, int ttl_ms, bool *leader,
                 int64_t *generation, char *err, size_t errlen);
} kg_store_ops;

struct kg_store {
    const kg_store_ops *ops;
    int64_t fence_generation; /* 0 = no fencing check */
    bool maintain_overrides;  /* load_monitors also drops kumaguard_override records that no
                                 longer match their monitor (the leader's job; default true,
                                 the controller clears it on followers, which write nothing) */
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
/* Both backends call this before applying: STORE_ERROR naming the first move with an unknown
 * kind or a node index that is not -1/interned (a target is required except for
 * CLEAR_OVERRIDE), or that would give an inactive monitor a node (expect_active 0 is only
 * valid for CLEAR_OVERRIDE). */
int store_check_moves(const kg_nametab *tab, const plan_move *moves, size_t n, char *err,
                      size_t errlen);

#endif
