/* types.c — names of the shared enums (node states, probe outcomes, event kinds).
 * Owns: string <-> enum mapping only. */
#include "types.h"

#include <string.h>

static const char *const state_names[NODE_STATE_COUNT] = {
    [NODE_UNKNOWN] = "unknown",       [NODE_ONLINE] = "online",
    [NODE_SUSPECT] = "suspect",       [NODE_OFFLINE] = "offline",
    [NODE_RECOVERING] = "recovering", [NODE_DRAINING] = "draining",
    [NODE_MAINTENANCE] = "maintenance",
};

const char *node_state_name(node_state s)
{
    return (s >= 0 && s < NODE_STATE_COUNT) ? state_names[s] : "unknown";
}

node_state node_state_parse(const char *s)
{
    if (!s)
        return NODE_UNKNOWN;
    for (int i = 0; i < NODE_STATE_COUNT; i++)
        if (strcmp(s, state_names[i]) == 0)
            return (node_state)i;
    return NODE_UNKNOWN;
}

const char *node_state_db_value(node_state s)
{
    /* Kuma nodes only know online/offline/recovering; suspect is still online to them. */
    if (s == NODE_SUSPECT)
        return "online";
    return node_state_name(s);
}

bool node_state_routable(node_state s)
{
    return s == NODE_ONLINE || s == NODE_SUSPECT || s == NODE_DRAINING;
}

bool node_state_placeable(node_state s)
{
    return s == NODE_ONLINE || s == NODE_SUSPECT;
}

const char *probe_outcome_name(probe_outcome o)
{
    switch (o) {
    case PROBE_OK: return "ok";
    case PROBE_CONNECT_FAILED: return "connect_failed";
    case PROBE_TIMEOUT: return "timeout";
    case PROBE_BAD_STATUS: return "bad_status";
    case PROBE_BAD_BODY: return "bad_body";
    case PROBE_ERROR: return "error";
    }
    return "error";
}

static const char *const kind_names[EV_KIND_COUNT] = {
    [EV_STATE_CHANGE] = "state_change", [EV_FAILOVER] = "failover",
    [EV_REVERT] = "revert",             [EV_REBALANCE] = "rebalance",
    [EV_FORCE_REBALANCE] = "force_rebalance", [EV_ADOPTION] = "adoption",
    [EV_CAPACITY_WARNING] = "capacity_warning", [EV_PANIC] = "panic",
    [EV_NGINX_RELOAD] = "nginx_reload", [EV_NGINX_FAILED] = "nginx_failed",
    [EV_LEADER] = "leader",             [EV_DB] = "database",
    [EV_OPERATOR] = "operator",         [EV_MONITOR] = "monitor",
    [EV_SETUP] = "setup",               [EV_RECONCILE_FAILED] = "reconcile_failed",
    [EV_HISTORY] = "history",
};

const char *event_kind_name(kg_event_kind k)
{
    return (k >= 0 && k < EV_KIND_COUNT) ? kind_names[k] : "unknown";
}

int event_kind_parse(const char *s)
{
    for (int i = 0; s && i < EV_KIND_COUNT; i++)
        if (strcmp(s, kind_names[i]) == 0)
            return i;
    return -1;
}
