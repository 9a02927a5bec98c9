/* setup_watch.h — first-run setup of the Kuma cluster.
 *
 * On a fresh cluster the `user` table is empty and only the primary node can create the first
 * user; the other nodes wait, and every node answers reconcile calls with 401.  While that is
 * so, kumaguard sends every proxied request to the primary (the node list handed to nginx marks
 * the others not routable, so `upstream kuma_cluster` holds only the primary and the fixed-node
 * cookie map falls back to it) and does not call the nodes' reconcile endpoint.  Within a few
 * seconds of the first user appearing, normal routing applies.
 *
 * A thread of its own (MariaDB only) looks at the `user` table through a store connection of
 * its own: every second while setup is pending or the table is absent, every 30 s once it is
 * complete.  Each change is posted to the controller (MSG_SETUP_CHANGED) so it publishes a new
 * snapshot at once.  The embedded SQLite store, and a database without a `user` table, are
 * never gated; so is a cluster whose state is not known yet (the database never answered).
 *
 * The primary is the node whose row has is_primary (the first by id if several), else the node
 * `node1` (what a Kuma node without UPTIME_KUMA_PRIMARY treats as primary, and where the Lua
 * version sent setup), else none: then routing stays normal and the status says so.
 *
 * Owns: the watcher thread, its store connection and the last state seen.  Must not: write to
 * the database, decide anything else about nodes, or block the controller (the controller only
 * reads the state under a mutex). */
#ifndef KG_SETUP_WATCH_H
#define KG_SETUP_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "snapshot.h"

typedef struct {
    bool known;            /* the database answered at least once */
    bool gated;            /* a `user` table exists */
    bool complete;         /* it has a row */
    int64_t checked_ms;    /* wall clock of the last answer, 0 = never */
    char error[160];       /* last failure to look, "" after a success */
} setup_state;

/* Starts the watcher when the store is MariaDB (DB_HOST set); otherwise does nothing.  0 or -1
 * with a message in err. */
int setup_watch_start(const kg_config *cfg, char *err, size_t errlen);
void setup_watch_stop(void);
/* The last state seen (any thread). */
void setup_watch_get(setup_state *out);
/* The reconcile predicate: false only while setup is known to be pending (the nodes answer
 * reconcile calls with 401 until the first user exists).  Any thread. */
bool setup_watch_complete(void);

/* Controller thread, while building a snapshot: fills the setup_* fields of s (after s->nodes
 * are in place). */
void setup_watch_fill(kg_snapshot *s);
/* Controller thread: hands s's node list to the nginx worker, with every node but the primary
 * marked not routable while setup is pending (see the top of this file). */
void setup_gate_submit(const kg_snapshot *s, bool freeze);

/* Pure.  The node that owns setup among nodes[0..n) (sorted by id), or NULL. */
const kg_node_view *setup_primary(const kg_node_view *nodes, int n);
/* Pure.  Marks every node but `primary` as in maintenance (out of every nginx list, also the
 * fallback one); returns how many were marked. */
int setup_gate_nodes(kg_node_view *nodes, int n, const char *primary);
/* Pure.  "primary_only" when s is gated, pending and has a primary, else "cluster". */
const char *setup_routing_mode(const kg_snapshot *s);

#endif
