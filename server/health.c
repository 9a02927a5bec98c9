/* health.c — node health state machine (see health.h for the diagram).
 *
 * Owns: the transition rules, as a table-free handful of cases kept in one function so the
 * whole machine reads top to bottom.  Must not: probe, log, sleep or read a clock (time comes in
 * as an argument). */
#include "health.h"

static health_transition move_to(node_health *h, node_state to, int64_t now_ms)
{
    health_transition t = {.changed = h->state != to, .from = h->state, .to = to};
    if (t.changed) {
        h->state = to;
        h->state_since_ms = now_ms;
        if (to == NODE_OFFLINE || to == NODE_MAINTENANCE) {
            h->proven = false;
            h->proven_ms = 0;
        } else if (to == NODE_ONLINE && t.from == NODE_RECOVERING) {
            h->proven = true; /* it just passed `rise` probes of ours */
            h->proven_ms = now_ms;
        }
    }
    return t;
}

/* An online or suspect node that has not been proven yet becomes proven after `rise`
 * consecutive successes. */
static void maybe_prove(node_health *h, const health_params *p, int64_t now_ms)
{
    if (!h->proven && node_state_placeable(h->state) && h->consecutive_successes >= p->rise) {
        h->proven = true;
        h->proven_ms = now_ms;
    }
}

void health_init(node_health *h, node_state persisted, int64_t now_ms)
{
    *h = (node_health){0};
    h->state_since_ms = now_ms;
    switch (persisted) {
    case NODE_DRAINING:
    case NODE_MAINTENANCE:
        h->state = persisted;
        break;
    case NODE_OFFLINE:
    case NODE_RECOVERING:
        /* it was down when we last knew: it must earn `rise` good probes again */
        h->state = NODE_OFFLINE;
        break;
    default:
        /* online, suspect, unknown (a Kuma node registers itself as online) */
        h->state = NODE_ONLINE;
        break;
    }
}

health_transition health_apply(node_health *h, const health_params *p, bool ok, int64_t now_ms)
{
    health_transition none = {.changed = false, .from = h->state, .to = h->state};
    if (h->state == NODE_MAINTENANCE)
        return none; /* not probed; a late result is ignored */

    if (ok) {
        h->consecutive_successes++;
        h->consecutive_failures = 0;
    } else {
        h->consecutive_failures++;
        h->consecutive_successes = 0;
    }

    health_transition t;
    switch (h->state) {
    case NODE_UNKNOWN:
    case NODE_ONLINE:
        if (ok)
            t = move_to(h, NODE_ONLINE, now_ms);
        else
            t = move_to(h, h->consecutive_failures >= p->fall ? NODE_OFFLINE : NODE_SUSPECT,
                        now_ms);
        maybe_prove(h, p, now_ms);
        return t;
    case NODE_SUSPECT:
        if (ok) {
            t = move_to(h, NODE_ONLINE, now_ms);
            maybe_prove(h, p, now_ms);
            return t;
        }
        return h->consecutive_failures >= p->fall ? move_to(h, NODE_OFFLINE, now_ms) : none;
    case NODE_OFFLINE:
        if (!ok)
            return none;
        if (h->consecutive_successes >= p->rise && !p->hold_online)
            return move_to(h, NODE_ONLINE, now_ms);
        return move_to(h, NODE_RECOVERING, now_ms);
    case NODE_RECOVERING:
        if (!ok)
            return move_to(h, NODE_OFFLINE, now_ms);
        return h->consecutive_successes >= p->rise && !p->hold_online
                   ? move_to(h, NODE_ONLINE, now_ms)
                   : none;
    case NODE_DRAINING:
        /* Draining is an operator state, but a draining node that dies is simply offline:
         * it must leave the nginx upstream.  It comes back as a normal node. */
        if (!ok && h->consecutive_failures >= p->fall)
            return move_to(h, NODE_OFFLINE, now_ms);
        return none;
    default:
        return none;
    }
}

health_transition health_set_operator(node_health *h, node_state target, int64_t now_ms)
{
    h->consecutive_failures = 0;
    h->consecutive_successes = 0;
    if (target == NODE_ONLINE) /* "enable": prove health first */
        target = NODE_RECOVERING;
    return move_to(h, target, now_ms);
}

health_transition health_release_hold(node_health *h, const health_params *p, int64_t now_ms)
{
    if (h->state == NODE_RECOVERING && h->consecutive_successes >= p->rise)
        return move_to(h, NODE_ONLINE, now_ms);
    return (health_transition){.changed = false, .from = h->state, .to = h->state};
}

bool health_in_transition(const node_health *h)
{
    return h->state == NODE_SUSPECT || h->state == NODE_RECOVERING ||
           h->state == NODE_UNKNOWN || (h->state == NODE_DRAINING && h->consecutive_failures > 0) ||
           (h->state == NODE_ONLINE && !h->proven);
}

bool health_placeable(const node_health *h)
{
    return node_state_placeable(h->state) && h->proven;
}

int64_t health_proven_since(const node_health *h)
{
    return h->state == NODE_ONLINE && h->proven ? h->proven_ms : 0;
}

bool health_probed(const node_health *h) { return h->state != NODE_MAINTENANCE; }

bool health_routable(const node_health *h) { return node_state_routable(h->state); }
