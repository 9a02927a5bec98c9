/* db_worker.h — the database applier: the only thread that talks to the cluster store.
 *
 * The controller decides; this thread carries out what was decided, so a database that takes
 * seconds to answer (or none at all) delays only database work — never probe handling, the
 * API's view, nginx or reconcile calls.  The controller hands over one job at a time (a batch:
 * lease, node states, events, moves, reads), the worker runs its steps in a fixed order and
 * posts the finished job back through the mailbox (MSG_DB_DONE, job in kg_msg.data); the
 * controller frees it.
 *
 * Step order within a job: connect + schema (+ static node rows when asked) -> lease ->
 * node states -> events -> moves -> an operator's monitor operation -> node rows -> monitor
 * rows -> prune.  Writes carry the
 * job's leader generation as their fence.  The first failing step ends the job; later steps
 * are not attempted (their `*_done` stay false, so the controller knows what to redo).
 *
 * Owns: the kg_store and its connection, the worker thread.  Must not: decide anything, read
 * controller state, or keep a job after posting it. */
#ifndef KG_DB_WORKER_H
#define KG_DB_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assign.h"
#include "config.h"
#include "monitor_ops.h"
#include "nametab.h"
#include "store.h"
#include "types.h"

typedef struct db_job {
    uint64_t id;
    /* --- what to do (owned by the job) --- */
    int64_t generation;           /* fence for writes; 0 = no writes allowed (follower) */
    bool upsert_static;           /* (re)write the configured static nodes' rows */
    bool lease;                   /* take or renew the leader lease */
    bool release_lease;           /* give the lease up (clean shutdown); nothing else runs */
    store_node_state *states;     /* node.status / last_seen to write */
    size_t n_states;
    kg_event *events;             /* kumaguard_event rows to append */
    size_t n_events;
    plan_move *moves;             /* moves to apply, in moves_tab's index space */
    size_t n_moves;
    kg_nametab moves_tab;
    char what[32];                /* label of the moves ("failover", "rebalance" ...) */
    const monitor_op_request *monitor_op; /* an operator's move / pin / unpin (owned by the job) */
    char actor[64];               /* who asked for monitor_op */
    bool load_nodes;
    bool load_monitors;
    bool monitors_cached;         /* the controller has a set: ask the store first whether the
                                     table changed, and read it only then */
    int64_t prune_before_ms;      /* > 0: delete kumaguard_event rows older than this */
    /* --- what happened --- */
    int rc;                       /* STORE_OK, STORE_ERROR, STORE_FENCED, STORE_SCHEMA_MISSING */
    char failed_step[32];
    char error[256];
    bool schema_ready;            /* the store is usable (connected, schema there) */
    bool lease_done;
    bool lease_lost;              /* the lease call said: lost in a conflict (STORE_FENCED) */
    bool lease_leader;
    int64_t lease_generation;
    bool states_done, events_done, moves_done, prune_done;
    store_apply_result applied;
    bool monitor_op_done;
    monitor_ops_outcome monitor_op_outcome;
    bool nodes_done;
    store_node_row *nodes;
    size_t n_nodes;
    bool monitors_done;
    bool monitors_unchanged;      /* the cheap probe said: nothing changed, nothing was read */
    store_monitor_set monitors;   /* indexes into monitors_tab */
    kg_nametab monitors_tab;
    int64_t started_mono_ms, finished_mono_ms;
} db_job;

/* A zeroed job (NULL on out of memory). */
db_job *db_job_new(void);
void db_job_free(db_job *j);

/* Starts the thread.  The store is opened lazily by the first job. */
int db_worker_start(const kg_config *cfg, char *err, size_t errlen);
/* Hands `j` over (the worker owns it until it is posted back).  -1 when a job is still
 * running or the worker is stopped; the caller keeps `j` then. */
int db_worker_submit(db_job *j);
/* Stops after the running job (which may take up to the database timeouts), closes the store
 * and frees a job that was never posted. */
void db_worker_stop(void);

#endif
