/* api_fixture.h — a synthetic cluster snapshot for the API tests (test_api_json.c,
 * test_api_http.c) and the API benchmark.  Header-only so each test executable stays one file.
 *
 * Ten nodes node01..node10: 01-07 online, 08 suspect, 09 offline (still carrying 40 monitors:
 * stranded), 10 maintenance; node01 is primary; effective counts 100+i*10; limit 1000; five
 * recent events with ids 1..5. */
#ifndef KG_TEST_API_FIXTURE_H
#define KG_TEST_API_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "snapshot.h"

#define FIX_T0 1795701600123LL /* 2026-11-26T14:00:00.123Z */

static inline void fixture_event(kg_event *e, int64_t id, kg_event_kind kind, const char *node,
                                 const char *from, const char *to, int count)
{
    memset(e, 0, sizeof *e);
    e->id = id;
    e->ts_ms = FIX_T0 - 60000 + id * 1000;
    e->kind = kind;
    snprintf(e->node, sizeof e->node, "%s", node);
    snprintf(e->from, sizeof e->from, "%s", from);
    snprintf(e->to, sizeof e->to, "%s", to);
    e->count = count;
    e->duration_ms = 12 * id;
    snprintf(e->reason, sizeof e->reason, "fixture event %lld", (long long)id);
}

/* A filled, unpublished snapshot with n_nodes (<= 99) nodes as described above. */
static inline kg_snapshot *fixture_snapshot(int n_nodes)
{
    kg_snapshot *s = snapshot_new(n_nodes);
    if (!s)
        return NULL;
    s->built_ms = FIX_T0;
    s->started_ms = FIX_T0 - 3600 * 1000;
    s->monitor_limit = 1000;
    for (int i = 0; i < n_nodes; i++) {
        kg_node_view *n = &s->nodes[i];
        snprintf(n->id, sizeof n->id, "node%02d", i + 1);
        snprintf(n->name, sizeof n->name, "Kuma node %d", i + 1);
        snprintf(n->host, sizeof n->host, "uptime-kuma-node%d:3001", i + 1);
        n->host_valid = true;
        n->is_primary = i == 0;
        n->is_static = i < 3;
        n->state = NODE_ONLINE;
        if (i == 7)
            n->state = NODE_SUSPECT;
        if (i == 8)
            n->state = NODE_OFFLINE;
        if (i == 9)
            n->state = NODE_MAINTENANCE;
        n->prev_state = NODE_ONLINE;
        n->state_since_ms = FIX_T0 - 10000;
        n->consecutive_failures = n->state == NODE_SUSPECT ? 1 : (n->state == NODE_OFFLINE ? 5 : 0);
        n->consecutive_successes = n->state == NODE_ONLINE ? 42 : 0;
        n->last_latency_ms = n->state == NODE_OFFLINE ? -1 : 3.25 + i;
        n->n_latency = 8;
        for (int k = 0; k < 8; k++)
            n->latency_history[k] = (n->state == NODE_OFFLINE && k > 4) ? -1 : 2.5 + k;
        if (n->state == NODE_OFFLINE) {
            snprintf(n->last_failure_reason, sizeof n->last_failure_reason,
                     "connection refused");
            n->last_failure_ms = FIX_T0 - 2000;
        }
        n->last_seen_ms = FIX_T0 - 1000;
        n->last_probe_ms = FIX_T0 - 500 - i;
        n->probes_total = 100 + i;
        n->probes_failed = i;
        n->http_status = n->state == NODE_OFFLINE ? 0 : 200;
        n->effective_monitors = n->state == NODE_OFFLINE ? 40 : 100 + i * 10;
        n->home_monitors = 100 + i * 10;
        n->pinned_monitors = i == 2 ? 3 : 0;
        n->monitor_limit = 1000;
    }
    s->nodes_online = n_nodes >= 8 ? 8 : n_nodes;
    s->monitors_total = 2000;
    s->monitors_active = 1900;
    s->monitors_unassigned = 2;
    s->monitors_stranded = 40;
    s->monitors_refreshed_ms = FIX_T0 - 5000;
    s->db_ok = true;
    snprintf(s->db_backend, sizeof s->db_backend, "sqlite");
    s->is_leader = true;
    s->leader_generation = 7;
    snprintf(s->instance_id, sizeof s->instance_id, "test-host:1234");
    s->rebalance.running = true;
    snprintf(s->rebalance.operation, sizeof s->rebalance.operation, "rebalance");
    snprintf(s->rebalance.phase, sizeof s->rebalance.phase, "applying");
    s->rebalance.moved = 30;
    s->rebalance.total = 120;
    s->rebalance.started_ms = FIX_T0 - 3000;
    s->nginx.enabled = true;
    s->nginx.reloads_ok = 4;
    s->nginx.reloads_failed = 1;
    s->nginx.renders = 9;
    s->nginx.last_reload_ms = FIX_T0 - 7000;
    s->nginx.last_reload_duration_ms = 41.5;
    s->nginx.last_ok = true;
    snprintf(s->nginx.include_path, sizeof s->nginx.include_path, "/etc/nginx/kuma.conf");
    s->nginx.routed_nodes = 8;
    s->failovers_total = 3;
    s->reverts_total = 2;
    s->rebalances_total = 1;
    s->adoptions_total = 1;
    s->monitors_moved_total = 321;
    s->db_errors_total = 6;
    for (int i = 0; i < 11; i++)
        s->latency_buckets[i] = i < 3 ? 10 : 1; /* 30 fast + 8 slower = 38 */
    s->latency_count = 38;
    s->latency_sum_ms = 400.5;
    fixture_event(&s->recent_events[0], 1, EV_STATE_CHANGE, "node09", "online", "offline", 0);
    fixture_event(&s->recent_events[1], 2, EV_FAILOVER, "node09", "node09", "several", 40);
    fixture_event(&s->recent_events[2], 3, EV_NGINX_RELOAD, "", "", "", 0);
    fixture_event(&s->recent_events[3], 4, EV_OPERATOR, "node10", "online", "maintenance", 0);
    fixture_event(&s->recent_events[4], 5, EV_REBALANCE, "", "", "several", 30);
    s->n_recent_events = 5;
    return s;
}

#endif
