/* controller_int.h — the controller thread's own state and the functions its files share
 * (controller.c, ctrl_nodes.c, ctrl_db.c, ctrl_plan.c, ctrl_publish.c).  Not for any other file:
 * other threads see the controller only through snapshot.h (outward) and mailbox.h (inward).
 *
 * Everything here runs on the controller thread, so the state below needs no lock; the
 * appliers it hands work to (db_worker.h, reconcile.h, nginx_worker.h, events.h, webhook.h)
 * copy what they are given.
 *
 * Owns: the types of the controller's state.  Must not: be included outside controller*.c /
 * ctrl_*.c. */
#ifndef KG_CONTROLLER_INT_H
#define KG_CONTROLLER_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assign.h"
#include "clock.h"
#include "db_worker.h"
#include "events.h"
#include "health.h"
#include "hostcheck.h"
#include "lease.h"
#include "netpolicy.h"
#include "log.h"
#include "mailbox.h"
#include "monitor_ops.h"
#include "nametab.h"
#include "nginx_feed.h"
#include "nginx_worker.h"
#include "panic.h"
#include "plan_events.h"
#include "policy.h"
#include "probe.h"
#include "reconcile.h"
#include "reconcile_sched.h"
#include "setup_watch.h"
#include "snapshot.h"
#include "store.h"
#include "webhook.h"

/* History retention: older events are deleted hourly, locally and (by the leader) in the
 * cluster database, so months of flapping cannot fill a disk. */
#define HISTORY_RETENTION_MS (90LL * 24 * 3600 * 1000)
#define DB_EVENTS_MAX 10000      /* events waiting for the cluster database */
#define LOAD_WAITERS_MAX 16      /* update-loads requests waiting for a monitor read */
#define DB_PING_INTERVAL_MS 1000 /* an idle database is asked to answer this often */
#define MONITOR_OPS_QUEUED 8     /* operators' move / pin / unpin requests waiting for the db */

/* ==========================================================================================
 * State owned by the controller thread
 * ========================================================================================== */

/* Probe results that change no state are published at most this often: with 1,000 nodes a
 * snapshot per probe result was most of kumaguard's CPU (bench/thousand_nodes.py). */
#define PUBLISH_GAP_MS 100

typedef struct {
    kg_node_view v;          /* what is published (state mirrors h.state) */
    node_health h;           /* times on the monotonic clock */
    int64_t fail_start_ms;   /* monotonic start of the current failure streak, 0 = passing */
    int64_t alive_since_ms;  /* monotonic: since when every probe passed, 0 = failing */
    int64_t last_probe_ms;   /* monotonic, 0 = never */
    bool in_db;              /* row seen in the node table */
    bool synced;             /* persisted node.status applied once (static nodes start early) */
    char written[21];        /* node.status as last written by us ("" = not yet) */
    int64_t seen_written_ms; /* last_seen as last written (wall) */
    rsched_node rs;          /* reconcile calls to this node */
} ctrl_node;

/* The monitor rows as last read (or as patched after our own applied moves).  The set carries
 * its own nametab: plans made on it, and moves sent to the database, use its indexes. */
typedef struct {
    store_monitor_set rows;
    kg_nametab tab;
    bool loaded;
    int64_t as_of_ms;        /* monotonic: the read started (or our moves were applied) then */
    int64_t wall_ms;
    uint64_t version;        /* +1 on every change of rows or tab (ctrl_publish caches counts) */
} monitor_set;

typedef enum { APPLY_NONE = 0, APPLY_CONVERGE, APPLY_REBALANCE, APPLY_MONITOR_OP } apply_kind;

/* An operator's move / pin / unpin, waiting for the database applier. */
typedef struct {
    monitor_op_request *req;
    kg_reply *reply;
    char actor[64];
} queued_monitor_op;

/* A rebalance in progress: its planned moves, applied in paced, cancellable batches. */
typedef struct {
    bool running;
    kg_event_kind kind;      /* EV_REBALANCE or EV_FORCE_REBALANCE */
    plan_move *moves;
    kg_nametab tab;          /* the index space of moves */
    size_t n, done, applied, skipped;
    int64_t started_ms, next_batch_ms;   /* monotonic */
    int64_t started_wall_ms;
    char actor[64];
} rebalance_op;

/* A rebalance asked for, waiting for a fresh monitor read before it is planned. */
typedef struct {
    bool pending;
    kg_event_kind kind;
    char actor[64];
    kg_reply *reply;         /* NULL for the automatic trigger */
    int64_t asked_ms;
} rebalance_request;

typedef struct {
    const kg_config *cfg;
    pthread_t thread;
    bool started;
    int64_t now, wall;       /* clocks as of the current step */
    int64_t started_ms, started_wall_ms;

    /* database (the applier owns the connection; this is what we know of it) */
    bool db_ok;
    bool db_was_ok;          /* answered at least once (no "back up" event on first connect) */
    bool schema_ready;
    const char *db_state;
    char db_error[256];
    int64_t db_errors_total;
    int64_t db_down_since_wall;
    int64_t db_last_ok_wall;
    int64_t db_backoff_ms;
    int64_t db_next_try_ms;  /* monotonic: no job before this while down */
    bool db_busy;            /* a job is with the applier */
    int64_t db_job_started;  /* monotonic */
    uint64_t db_job_seq;
    bool db_silent;          /* the running job passed DB_TIMEOUT: reported as down */
    bool static_dirty;       /* rewrite the static nodes' rows with the next job */
    apply_kind applying;     /* moves of the running job belong to this operation */
    kg_event *db_events;     /* events for kumaguard_event, oldest first */
    size_t n_db_events, cap_db_events;
    int64_t db_events_dropped;
    kg_reply *load_waiters[LOAD_WAITERS_MAX];
    int n_load_waiters;
    queued_monitor_op monitor_ops[MONITOR_OPS_QUEUED];
    int n_monitor_ops;
    kg_reply *monitor_op_reply; /* the running job's monitor operation answers here */
    bool want_nodes, want_monitors;
    bool stopped;            /* the loop ended (controller_stop): nothing is published */
    int64_t next_refresh_ms, next_prune_ms, next_ping_ms;
    int64_t next_trim_ms;    /* give freed heap back to the system (controller.c) */

    ctrl_node *nodes;        /* sorted by id */
    int n_nodes;
    monitor_set mon;

    /* leadership: writes carry the generation; the lease is trusted on our monotonic clock
     * only until its request's start plus the TTL minus a margin */
    bool leader;
    int64_t generation;
    int64_t next_lease_ms;
    lease_state lease;       /* lease.h: how long this controller may still lead */

    panic_state panic;
    panic_cfg pcfg;
    rsched_cfg rcfg;

    bool need_converge;      /* a state change asks for a plan on monitors read after it */
    int64_t stale_plan_epoch;/* == converge_epoch: a node stopped taking monitors, plan on the
                                set we have at once, then again on the read asked for */
    int64_t converge_epoch;  /* monotonic: the monitors must be read after this */
    int64_t next_converge_ms;/* periodic convergence: retries no-target, adoption, reverts */
    int64_t next_revert_ms;  /* earliest next revert batch */
    int64_t next_auto_rebalance_ms;
    int64_t auto_checked_ms; /* the monitor set the trigger last looked at */

    rebalance_op reb;
    rebalance_request reb_req;
    kg_rebalance_view reb_view;

    kg_event recent[KG_RECENT_EVENTS];
    int n_recent;
    bool history_ok;

    int64_t failovers_total, reverts_total, rebalances_total, adoptions_total;
    int64_t moved_total, reconcile_calls, reconcile_failures;
    int64_t lat_buckets[11];
    double lat_sum;
    int64_t lat_count;

    uint32_t rng;
    bool dirty;              /* something visible changed: publish */
    bool probe_dirty;        /* only probe counters/latency changed: publish within
                              * PUBLISH_GAP_MS (a state change sets dirty: published at once) */
    int64_t last_publish_ms;
} ctrl_state;

/* The controller's state: one instance, touched by the controller thread only. */
extern ctrl_state ctl;

/* controller.c: clocks and small helpers */
uint32_t ctrl_next_rand(void);
int64_t ctrl_to_wall(int64_t mono);
void ctrl_refresh_clocks(void);

/* ctrl_nodes.c: events, the node table, probes and the panic guard */
void ctrl_queue_db_event(const kg_event *ev);
void ctrl_requeue_db_events(db_job *j);
void ctrl_record_event(kg_event *ev);
void ctrl_emit(kg_event_kind kind, const char *node, const char *from, const char *to, int count, int64_t duration_ms, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
void ctrl_check_history(void);
ctrl_node *ctrl_find_node(const char *id);
ctrl_node *ctrl_add_node(const char *id, const char *name, const char *host, node_state persisted);
void ctrl_on_transition(ctrl_node *cn, health_transition t, const char *why);
void ctrl_merge_node_rows(const store_node_row *rows, size_t n);
store_node_state *ctrl_node_states_to_write(size_t *n_out);
/* What the panic guard sees of a node (counted when probed and valid; failing). */
panic_node ctrl_panic_node(const ctrl_node *cn);
void ctrl_update_panic(void);
bool ctrl_proving(void);
bool ctrl_moves_allowed(void);
void ctrl_on_probe(const kg_msg *m);
void ctrl_mark_returning(ctrl_node *cn);

/* ctrl_db.c: leadership and the database applier's jobs */
void ctrl_set_role(bool leader, int64_t generation, const char *why);
void ctrl_check_lease_expiry(void);
void ctrl_db_watchdog(void);
void ctrl_finish_load_waiters(int status, const char *error, const char *detail);
void ctrl_on_db_done(db_job *j);
db_job *ctrl_build_job(plan_move *moves, size_t n_moves, const kg_nametab *tab, const char *what);
bool ctrl_submit_job(db_job *j);
void ctrl_maybe_submit(void);
bool ctrl_db_idle(void);

/* ctrl_plan.c: monitors, plans and their pace, rebalancing, reconcile calls */
void ctrl_applied_moves(const db_job *j);
void ctrl_converge(void);
void ctrl_reb_clear(void);
void ctrl_reb_finish(const char *phase, const char *error);
void ctrl_reb_request(kg_event_kind kind, const char *actor, kg_reply *reply);
void ctrl_reb_plan(void);
void ctrl_reb_step(void);
void ctrl_reb_batch_done(const db_job *j);
void ctrl_maybe_auto_rebalance(void);
void ctrl_on_reconcile_done(const kg_msg *m);
int64_t ctrl_schedule_calls(void);
int64_t ctrl_min_due(int64_t a, int64_t b);

/* ctrl_publish.c: the snapshot */
void ctrl_publish(void);
/* Every answer the controller gives (operator actions, update-loads, monitor operations,
 * refusals, the stop) goes through these: what changed is published first, so a read that
 * follows the answer sees it (read-your-writes). */
void ctrl_reply(kg_reply *r, int status, const char *error, const char *detail);
void ctrl_reply_count(kg_reply *r, int status, const char *error, const char *detail,
                      int64_t count);
void ctrl_publish_free(void); /* what it caches, at the controller's stop */

#endif
