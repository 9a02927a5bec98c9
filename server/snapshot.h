/* snapshot.h — the one way state crosses threads, outward: an immutable, reference-counted
 * picture of the cluster that the controller thread publishes and every other thread reads.
 *
 * Threading contract (cluster state crosses threads in two ways, documented here and in
 * mailbox.h; the nginx feed thread's one-slot input is the same idea as the mailbox, see
 * nginx_worker.h):
 *   - The controller thread owns all mutable cluster state.  After each change it builds a new
 *     `kg_snapshot`, fills it completely, and calls snapshot_publish().  From then on the
 *     snapshot is read-only; nobody writes to it again.
 *   - Readers (HTTP threads, the prober, SSE streams) call snapshot_acquire(), read freely
 *     without locks, and call snapshot_release().  The last release frees it.
 *   - Requests flowing the other way (actions, probe results) go through mailbox.h.
 *
 * Owns: the current-snapshot pointer, its lock and the "newer snapshot" condition variable.
 * Must not: contain decision logic or be written to after publish. */
#ifndef KG_SNAPSHOT_H
#define KG_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "types.h"

typedef struct {
    atomic_int refs;
    uint64_t seq;              /* increases with every publish, for the life of the process */
    int64_t built_ms;
    int64_t started_ms;        /* when kumaguard started */

    kg_node_view *nodes;       /* sorted by id */
    int n_nodes;

    /* cluster summary */
    int nodes_online;          /* online + suspect */
    int monitors_total;        /* all monitor rows */
    int monitors_active;
    int monitors_unassigned;   /* active with both node_id and assigned_node NULL */
    int monitors_stranded;     /* active whose effective node is not routable (incl. pinned) */
    int64_t monitors_refreshed_ms;
    int monitor_limit;

    bool db_ok;
    char db_backend[16];       /* "sqlite" or "mariadb" */
    char db_error[256];
    int64_t db_errors_total;
    const char *db_state;      /* static text: "up", "down", "no_answer", "waiting_schema",
                                  "connecting" */
    int64_t db_down_since_ms;  /* wall clock; 0 when up */
    int64_t db_last_ok_ms;     /* wall clock of the last answered database job */
    int64_t db_next_retry_ms;  /* wall clock; 0 when none is planned */

    bool history_failing;      /* the local history (state.db) refuses writes */
    char history_error[160];
    int64_t history_lost;      /* events that never reached the local history */

    bool is_leader;
    int64_t leader_generation;
    char instance_id[128];

    bool panic;                /* panic guard engaged: no moves, nginx frozen */
    char panic_reason[224];
    int64_t panic_since_ms;    /* wall clock */
    bool panic_override;       /* an operator allowed moves for this outage */
    char panic_override_by[64];
    int panic_failing, panic_total, panic_released;

    kg_rebalance_view rebalance;
    kg_nginx_view nginx;

    /* counters for /metrics */
    int64_t failovers_total;
    int64_t reverts_total;
    int64_t rebalances_total;
    int64_t adoptions_total;
    int64_t monitors_moved_total;
    int64_t reconcile_calls_total;
    int64_t reconcile_failures_total;

    /* probe latency histogram over all probes since start (buckets in ms, cumulative counts
     * are computed by the reader): le 5,10,25,50,100,250,500,1000,2500,5000,+Inf */
    int64_t latency_buckets[11];
    double latency_sum_ms;
    int64_t latency_count;

    kg_event recent_events[KG_RECENT_EVENTS]; /* oldest first */
    int n_recent_events;

    /* Lazily rendered /api/system-status body: the first HTTP thread to need it renders it
     * and installs it with a compare-exchange (losers free theirs); snapshot_release frees
     * it with the snapshot.  The only field written after publish, and only that way. */
    _Atomic(char *) cached_json;

    /* First-run setup (filled by setup_watch_fill(), see setup_watch.h).  On a fresh cluster
     * only the primary node can create the first user: while `setup_gated && !setup_complete`
     * nginx sends everything to setup_primary and reconcile calls wait (they get 401). */
    bool setup_gated;          /* the store has a `user` table (MariaDB): setup can be pending */
    bool setup_complete;       /* a user exists, or setup is not gated: the reconcile
                                  scheduler's predicate ("may I call the nodes?") */
    char setup_primary[KG_NODE_ID_MAX + 1]; /* node that owns setup, "" = none identified */
    int64_t setup_checked_ms;  /* last successful look at the `user` table, 0 = never */
} kg_snapshot;

extern const double kg_latency_bucket_bounds[10];

/* Allocates an empty snapshot (refs = 1, owned by the caller until published). */
kg_snapshot *snapshot_new(int n_nodes);
/* Makes `s` the current snapshot; takes over the caller's reference. */
void snapshot_publish(kg_snapshot *s);
/* Current snapshot with one more reference, or NULL before the first publish. */
kg_snapshot *snapshot_acquire(void);
void snapshot_release(kg_snapshot *s);
/* One more reference to a snapshot the caller already holds (released with snapshot_release). */
kg_snapshot *snapshot_retain(kg_snapshot *s);
/* Blocks until a snapshot with seq > after_seq is published or timeout_ms passes.
 * Returns the new snapshot (acquired) or NULL on timeout / shutdown. */
kg_snapshot *snapshot_wait_newer(uint64_t after_seq, int timeout_ms);
/* Wakes every waiter and makes snapshot_wait_newer return NULL from now on. */
void snapshot_shutdown(void);
/* Releases the current snapshot (at exit). */
void snapshot_clear(void);

/* Finds a node by id in a snapshot (binary search), NULL if absent. */
const kg_node_view *snapshot_find_node(const kg_snapshot *s, const char *id);

#endif
