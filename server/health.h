/* health.h — the node health state machine (SPEC section 2).  Pure: probe results and the
 * clock go in, state transitions come out.  It never probes, sleeps, logs or touches storage.
 *
 *   online --fail--> suspect --(fall fails)--> offline --ok--> recovering --(rise oks)--> online
 *   suspect --ok--> online          recovering --fail--> offline
 *   draining / maintenance: set by the operator; draining keeps being probed and goes offline
 *   after `fall` failures like any node; maintenance is not probed at all.
 *
 * A node first seen (UNKNOWN) takes its first verdict after one probe *only* in the direction
 * of the persisted state: it starts from what node.status said (online nodes start online,
 * others start offline), so a restart of kumaguard moves nothing on its own. */
#ifndef KG_HEALTH_H
#define KG_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "types.h"

typedef struct {
    int fall;
    int rise;
} health_params;

typedef struct {
    node_state state;
    int consecutive_failures;
    int consecutive_successes;
    int64_t state_since_ms;
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
/* Should this node be probed at the fast interval (in transition)? */
bool health_in_transition(const node_health *h);
/* Is the node probed at all? */
bool health_probed(const node_health *h);
/* nginx may route to it. */
bool health_routable(const node_health *h);

#endif
