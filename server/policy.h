/* policy.h — the controller's small rules, each a pure function: what a follower mirrors from
 * the node table, when the load spread calls for an automatic rebalance, how long to wait
 * before reconnecting to the database, and which move counts as a failover, a revert or an
 * adoption.  Kept here, out of controller.c, so each has unit tests with plain values.
 *
 * Owns: nothing.  Must not: read clocks, log, or touch I/O. */
#ifndef KG_POLICY_H
#define KG_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "assign.h"
#include "types.h"

/* Operator states (draining, maintenance) are decided by the leader and persisted in
 * node.status; a follower mirrors them so that its nginx stops routing to a node in
 * maintenance too.  Returns the state a follower should switch to, or NODE_UNKNOWN when it
 * keeps its own (probe-driven) state.  `mine` is the follower's current state, `db` what
 * node.status says. */
node_state policy_follower_state(node_state mine, node_state db);

/* Automatic rebalance: true when the effective load of the online nodes spreads wider than
 * `spread` ((max - min) / mean), there are at least two of them, and no failover or recovery
 * is in flight (every node is online, draining or in maintenance).  loads[i] and states[i]
 * describe node i; spread <= 0 means off. */
bool policy_auto_rebalance(const int *loads, const node_state *states, int n, double spread,
                           double *spread_out);

/* Next database reconnect delay: 500 ms doubling up to cap_ms, with up to 20 % jitter taken
 * from `rnd` (any 32-bit value), so several controllers do not retry in step. */
int64_t policy_db_backoff(int64_t prev_ms, int64_t cap_ms, uint32_t rnd);

/* Where a move takes a monitor from and to (node indexes; -1 = none). */
int32_t policy_move_from(const plan_move *m);
int32_t policy_move_to(const plan_move *m);

/* What a move is, for the event log. */
typedef enum { MOVE_IS_FAILOVER, MOVE_IS_REVERT, MOVE_IS_ADOPTION, MOVE_IS_REBALANCE } move_class;
/* `from_placeable`: the node the monitor leaves is placeable (a move off a live node to its
 * home is a revert, not a failover). */
move_class policy_classify_move(const plan_move *m, bool from_placeable);

#endif
