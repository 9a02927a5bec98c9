/* ctrl_publish.c — builds the snapshot other threads read (snapshot.h) from the controller's
 * state, and hands the node list to the nginx feed.  Part of the controller thread
 * (controller_int.h).
 *
 * Keeps the per-node monitor counts of the monitor set for its version (ctl.mon.version).
 * Must not: change controller state (beyond clearing `dirty`). */
#include "controller_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==========================================================================================
 * Snapshot
 * ========================================================================================== */

/* Per-node monitor counts of the monitor set, kept for its version: with 1,000,000 monitors a
 * walk over every row costs milliseconds, and a snapshot is published up to ten times a
 * second while the set changes only on a read or after our own moves. */
static struct {
    bool valid;
    uint64_t version;     /* of ctl.mon counted */
    int n;                /* entries of the arrays (ctl.mon.tab.n then) */
    int *eff, *home, *pinned;
    int total, active, unassigned;
} C;

static void counts_free(void)
{
    free(C.eff);
    free(C.home);
    free(C.pinned);
    memset(&C, 0, sizeof C);
}

static bool counts_update(void)
{
    if (C.valid && C.version == ctl.mon.version && C.n == ctl.mon.tab.n)
        return true;
    counts_free();
    int nn = ctl.mon.tab.n;
    C.eff = calloc((size_t)nn + 1, sizeof *C.eff);
    C.home = calloc((size_t)nn + 1, sizeof *C.home);
    C.pinned = calloc((size_t)nn + 1, sizeof *C.pinned);
    if (!C.eff || !C.home || !C.pinned) {
        counts_free();
        return false;
    }
    for (size_t i = 0; i < ctl.mon.rows.n; i++) {
        const plan_monitor *m = &ctl.mon.rows.monitors[i];
        C.total++;
        if (!m->active)
            continue;
        C.active++;
        int32_t e = plan_effective(m);
        if (e < 0 || e >= nn) {
            C.unassigned++;
            continue;
        }
        C.eff[e]++;
        if (m->home >= 0 && m->home < nn)
            C.home[m->home]++;
        if (m->over >= 0 && m->over < nn && !m->ours)
            C.pinned[m->over]++;
    }
    C.n = nn;
    C.version = ctl.mon.version;
    C.valid = true;
    return true;
}

static void count_monitors(kg_snapshot *s)
{
    if (!counts_update())
        return;
    s->monitors_total += C.total;
    s->monitors_active += C.active;
    s->monitors_unassigned += C.unassigned;
    for (int i = 0; i < C.n; i++) { /* stranded: running on a node that is not routable */
        if (!C.eff[i])
            continue;
        ctrl_node *cn = ctrl_find_node(nametab_name(&ctl.mon.tab, i));
        if (!cn || !node_state_routable(cn->h.state))
            s->monitors_stranded += C.eff[i];
    }
    for (int i = 0; i < s->n_nodes; i++) {
        int32_t idx = nametab_find(&ctl.mon.tab, s->nodes[i].id, strlen(s->nodes[i].id));
        if (idx < 0 || idx >= C.n)
            continue;
        s->nodes[i].effective_monitors = C.eff[idx];
        s->nodes[i].home_monitors = C.home[idx];
        s->nodes[i].pinned_monitors = C.pinned[idx];
    }
}

void ctrl_reply_count(kg_reply *r, int status, const char *error, const char *detail,
                      int64_t count)
{
    if (r && ctl.dirty && !ctl.stopped)
        ctrl_publish();
    reply_finish_count(r, status, error, detail, count);
}

void ctrl_reply(kg_reply *r, int status, const char *error, const char *detail)
{
    ctrl_reply_count(r, status, error, detail, -1);
}

void ctrl_publish_free(void)
{
    counts_free();
}

static void reconcile_view(const ctrl_node *cn, kg_reconcile_view *v)
{
    const rsched_node *rs = &cn->rs;
    *v = (kg_reconcile_view){
        .pending_starts = rs->starts,
        .pending_stops = rs->stops,
        .in_flight = rs->in_flight,
        .must_tell = rs->tell_first,
        .last_result = rsched_result_name(rs->last_result),
        .last_http = rs->last_http,
        .last_call_ms = ctrl_to_wall(rs->last_call_ms),
        .call_started_ms = rs->in_flight ? ctrl_to_wall(rs->call_start_ms) : 0,
        .last_duration_ms = rs->last_duration_ms,
        .next_cron_ms = ctrl_to_wall(rsched_next_cron_ms(&ctl.rcfg, ctl.now, ctl.wall - ctl.now)),
        .waiting = rs->waiting,
        .calls = rs->calls,
        .failures = rs->failures,
        .timeouts = rs->timeouts,
        .rate_limited = rs->rate_limited,
        .unauthorized = rs->unauthorized,
        .left_to_cron = rs->left_to_cron,
    };
}

void ctrl_publish(void)
{
    kg_snapshot *s = snapshot_new(ctl.n_nodes);
    if (!s) {
        log_error("out of memory building a snapshot");
        return;
    }
    s->built_ms = ctl.wall;
    s->started_ms = ctl.started_wall_ms;
    for (int i = 0; i < ctl.n_nodes; i++) {
        ctrl_node *cn = &ctl.nodes[i];
        cn->v.state = cn->h.state;
        cn->v.proven = cn->h.proven;
        cn->v.fast_probe = health_in_transition(&cn->h);
        reconcile_view(cn, &cn->v.reconcile);
        s->nodes[i] = cn->v;
        if (node_state_placeable(cn->h.state))
            s->nodes_online++;
    }
    count_monitors(s);
    s->monitors_refreshed_ms = ctl.mon.wall_ms;
    s->monitor_limit = ctl.cfg->monitor_limit;
    s->db_ok = ctl.db_ok;
    snprintf(s->db_backend, sizeof s->db_backend, "%s", ctl.cfg->db_host ? "mariadb" : "sqlite");
    snprintf(s->db_error, sizeof s->db_error, "%s", ctl.db_error);
    s->db_errors_total = ctl.db_errors_total;
    s->db_state = ctl.db_state ? ctl.db_state : "connecting";
    s->db_down_since_ms = ctl.db_down_since_wall;
    s->db_last_ok_ms = ctl.db_last_ok_wall;
    s->db_next_retry_ms = !ctl.db_ok && ctl.db_next_try_ms > ctl.now ? ctrl_to_wall(ctl.db_next_try_ms) : 0;
    events_health_t hh;
    events_health(&hh);
    s->history_failing = !hh.ok;
    snprintf(s->history_error, sizeof s->history_error, "%s", hh.ok ? "" : hh.error);
    s->history_lost = hh.lost;
    s->is_leader = ctl.leader;
    s->leader_generation = ctl.generation;
    snprintf(s->instance_id, sizeof s->instance_id, "%s", ctl.cfg->instance_id);
    s->panic = ctl.panic.engaged;
    snprintf(s->panic_reason, sizeof s->panic_reason, "%s",
             ctl.panic.engaged ? ctl.panic.reason : "");
    s->panic_since_ms = ctl.panic.engaged ? ctrl_to_wall(ctl.panic.engaged_ms) : 0;
    s->panic_override = ctl.panic.override;
    snprintf(s->panic_override_by, sizeof s->panic_override_by, "%s", ctl.panic.override_by);
    s->panic_failing = ctl.panic.failing;
    s->panic_total = ctl.panic.total;
    s->panic_released = ctl.panic.released;
    s->rebalance = ctl.reb_view;
    s->failovers_total = ctl.failovers_total;
    s->reverts_total = ctl.reverts_total;
    s->rebalances_total = ctl.rebalances_total;
    s->adoptions_total = ctl.adoptions_total;
    s->monitors_moved_total = ctl.moved_total;
    s->reconcile_calls_total = ctl.reconcile_calls;
    s->reconcile_failures_total = ctl.reconcile_failures;
    memcpy(s->latency_buckets, ctl.lat_buckets, sizeof s->latency_buckets);
    s->latency_sum_ms = ctl.lat_sum;
    s->latency_count = ctl.lat_count;
    memcpy(s->recent_events, ctl.recent, sizeof ctl.recent[0] * (size_t)ctl.n_recent);
    s->n_recent_events = ctl.n_recent;

    /* nginx follows the nodes (frozen while the panic guard holds), on its own thread; before
     * the cluster's first user exists, only the primary node is routed (setup_watch.h) */
    setup_watch_fill(s);
    setup_gate_submit(s, panic_freezes_routing(&ctl.panic));
    nginx_worker_status(&s->nginx);
    snapshot_publish(s);
    ctl.dirty = false;
    ctl.probe_dirty = false;
    ctl.last_publish_ms = ctl.now;
}
