/* policy.c — the controller's small pure rules (see policy.h). */
#include "policy.h"

#include <stddef.h>

static bool is_operator_state(node_state s)
{
    return s == NODE_DRAINING || s == NODE_MAINTENANCE;
}

node_state policy_follower_state(node_state mine, node_state db)
{
    if (is_operator_state(db))
        return mine == db ? NODE_UNKNOWN : db;
    /* the leader lifted the operator state: probes decide again, starting from recovering */
    if (is_operator_state(mine))
        return NODE_ONLINE;
    return NODE_UNKNOWN;
}

bool policy_auto_rebalance(const int *loads, const node_state *states, int n, double spread,
                           double *spread_out)
{
    if (spread_out)
        *spread_out = 0;
    if (spread <= 0)
        return false;
    int lo = -1, hi = -1, online = 0;
    long total = 0;
    for (int i = 0; i < n; i++) {
        if (states[i] != NODE_ONLINE) {
            if (!is_operator_state(states[i]))
                return false; /* a failover or recovery is in flight: let it settle */
            continue;
        }
        int l = loads[i];
        lo = lo < 0 || l < lo ? l : lo;
        hi = l > hi ? l : hi;
        total += l;
        online++;
    }
    if (online < 2 || total == 0)
        return false;
    double s = (double)(hi - lo) / ((double)total / online);
    if (spread_out)
        *spread_out = s;
    return s > spread;
}

int64_t policy_db_backoff(int64_t prev_ms, int64_t cap_ms, uint32_t rnd)
{
    int64_t next = prev_ms > 0 ? prev_ms * 2 : 500;
    if (next > cap_ms)
        next = cap_ms;
    return next + (int64_t)(rnd % 1000) * next / 5000; /* + 0..20 % */
}

int32_t policy_move_from(const plan_move *m)
{
    return m->expect_over >= 0 ? m->expect_over : m->expect_home;
}

int32_t policy_move_to(const plan_move *m)
{
    switch (m->kind) {
    case MOVE_SET_OVERRIDE: return m->to;
    case MOVE_CLEAR_OVERRIDE: return m->expect_home;
    default: return (m->expect_over >= 0 && !m->clear_override) ? m->expect_over : m->to;
    }
}

move_class policy_classify_move(const plan_move *m, bool from_placeable)
{
    int32_t from = policy_move_from(m);
    if (m->kind == MOVE_SET_HOME && from < 0)
        return MOVE_IS_ADOPTION;
    if (m->kind == MOVE_CLEAR_OVERRIDE && from_placeable)
        return MOVE_IS_REVERT;
    if (m->kind == MOVE_SET_HOME && from_placeable)
        return MOVE_IS_REBALANCE;
    return MOVE_IS_FAILOVER;
}
