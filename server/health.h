/* health.h — the node health state machine.  Pure: probe results and the
 * clock go in, state transitions come out.  It never probes, sleeps, logs or touches storage.
 *
 *   online --fail--> suspect --(fall fails)--> offline --ok--> recovering --(rise oks)--> online
 *   suspect --ok--> online          recovering --fail--> offline
 *   draining / maintenance: set by the operator; draining keeps being probed and goes offline
 *   after `fall` failures like any node; maintenance is not probed at all.
 *
 * A node first seen starts from what node.status said (online nodes start online, others start
 * offline), so a restart of kumaguard moves nothing on its own.  But a node's own row says
 * `online` whenever it restarted, and a row we wrote may be stale: so a node starts
 * *unproven*.  Unproven nodes are routed and keep the monitors they have, but nothing is placed
 * on them and nothing reverts to them until kumaguard's own probes saw `rise` consecutive
 * successes; the recovery hold-down counts from that proof (health_proven_since).  Unproven
 * nodes are probed at the fast interval, so the proof takes `rise` fast intervals.
 *
 * The recovering -> online step can be held by the caller (health_params.hold_online): a node
 * that comes back after failing is first told to drop the monitors that moved away while it
 * was unreachable, and only then becomes routable.  health_release_hold() takes the step when
 * the caller's condition is met. */
#ifndef KG_HEALTH_H
#define KG_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "types.h"

typedef struct {
    int fall;
    int rise;
    bool hold_online;        /* keep a node that passed `rise` in recovering (see above) */
} health_params;

typedef struct {
    node_state state;
    int consecutive_failures;
    int consecutive_successes;
    int64_t state_since_ms;
    bool proven;             /* passed `rise` probes of ours since it last was offline */
    int64_t proven_ms;       /* when it did */
} node_health;

typedef struct {
    bool changed;
    node_state from;
    node_state to;
} health_transition;

/* Initial health from the persisted node.status (see above). */
void health_init(node_health *h, node_state persisted, int64_t now_ms);
/* Applies one probe result. */
health_transition health_apply(node_health *h, const health_params *p, bool ok, int64_t now_ms);
/* Operator actions: drain, maintenance, enable (enable goes to recovering so that `rise`
 * successful probes are required before the node is used again). */
health_transition health_set_operator(node_health *h, node_state target, int64_t now_ms);
/* Takes the held recovering -> online step when the node has passed `rise`; otherwise
 * nothing changes. */
health_transition health_release_hold(node_health *h, const health_params *p, int64_t now_ms);
/* Should this node be probed at the fast interval (in transition, or not yet proven)? */
bool health_in_transition(const node_health *h);
/* May monitors be placed on the node (placeable state and proven)? */
bool health_placeable(const node_health *h);
/* Since when the node is online and proven (0 when it is not): the start of a hold-down. */
int64_t health_proven_since(const node_health *h);
/* Is the node probed at all? */
bool health_probed(const node_health *h);
/* nginx may route to it. */
bool health_routable(const node_health *h);

#endif
