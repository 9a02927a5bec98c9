/* monitor_ops.h — per-monitor operations an operator asks for through the API: move a monitor
 * to a node, pin it there, unpin it; one monitor or a batch.
 *
 *   move, revert=false  the target becomes the monitor's home (monitor.node_id) and kumaguard's
 *                       own override, if any, is cleared: the monitor stays there, fails over
 *                       and comes back like any monitor homed there (a rebalance may still move
 *                       it, as it may any unpinned monitor).
 *   move, revert=true   assigned_node := target, recorded as kumaguard's override: reverted
 *                       like a failover, i.e. the monitor goes home once its home node is
 *                       online and past RECOVERY_HOLD_DOWN (at the next convergence when it
 *                       already is).  Moving to the home node clears the override.
 *   pin                 assigned_node := target as an operator's pin (not kumaguard's): no
 *                       failover, revert or rebalance ever changes it.
 *   unpin               clears an operator's pin (the monitor runs on its home again, and fails
 *                       over from there if that node is down).
 * A move refuses a pinned monitor (unpin first), an unpin a monitor without a pin.
 *
 * Everything is validated before anything is written, and written all or nothing: an unknown
 * monitor (404), an unknown target (404), a target that is not online (409), an inactive
 * monitor for move/pin (409), a row that changed between the read and the write (409) leave the
 * database as it was.
 *
 * Split like the rest of kumaguard: the request body is parsed by api_route.c
 * (api_parse_monitor_op, fuzzed), planning is a pure function here (unit tested), and
 * monitor_ops_run() is the one function the controller calls, on whatever thread owns the
 * cluster store, as the leader (the store fences every write).
 * Owns: the request format and the rules above.  Must not: log, look at a clock, or keep state. */
#ifndef KG_MONITOR_OPS_H
#define KG_MONITOR_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"
#include "store.h"
#include "types.h"

#define MONITOR_OPS_MAX_BATCH 500
#define MONITOR_OPS_MAX_TOUCHED 32

typedef enum { MONITOR_OP_MOVE = 0, MONITOR_OP_PIN, MONITOR_OP_UNPIN } monitor_op_kind;

typedef struct {
    monitor_op_kind kind;
    bool revert;                      /* MOVE only */
    char node[KG_NODE_ID_MAX + 1];    /* MOVE, PIN: the target node */
    size_t n_ids;
    int64_t ids[MONITOR_OPS_MAX_BATCH]; /* ascending, no duplicates */
} monitor_op_request;

const char *monitor_op_name(monitor_op_kind k);

/* The answer of a plan or a run: an HTTP status with an error code and a detail. */
typedef struct {
    int status;                       /* 200, 404, 409, 503 ... */
    char error[48];                   /* "" on success */
    char detail[256];
} monitor_ops_verdict;

/* Pure.  Checks req against the nodes (from the current snapshot) and the monitors' current
 * rows (rows[0..n_rows), any order), and fills changes[] (room for req->n_ids) with the guarded
 * changes to write; monitors already in the asked state need none.  The changes point into req
 * and rows.  Returns the number of changes, or -1 with the refusal in *v (nothing to write). */
long monitor_ops_plan(const monitor_op_request *req, const kg_node_view *nodes, int n_nodes,
                      const store_monitor_row *rows, size_t n_rows, store_monitor_change *changes,
                      monitor_ops_verdict *v);

typedef struct {
    monitor_ops_verdict v;
    int store_rc;                     /* STORE_OK, or STORE_ERROR / STORE_FENCED for the caller
                                         (v.detail then holds the store's message) */
    size_t changed;                   /* monitors whose state changed (a row, or who owns
                                         its override) */
    /* for the event (when changed > 0) */
    char ev_node[KG_NODE_ID_MAX + 1];
    char ev_from[KG_NODE_ID_MAX + 1];
    char ev_to[KG_NODE_ID_MAX + 1];
    char ev_reason[192];
    /* nodes whose set of monitors changed: to be told to reconcile */
    int n_touched;
    char touched[MONITOR_OPS_MAX_TOUCHED][KG_NODE_ID_MAX + 1];
} monitor_ops_outcome;

/* Reads the monitors, plans, and applies the changes in one fenced transaction.  `s` is the
 * current snapshot (node states), `actor` who asked (for the event and the override record). */
void monitor_ops_run(kg_store *store, const monitor_op_request *req, const kg_snapshot *s,
                     const char *actor, monitor_ops_outcome *out);

#endif
