/* ctrl_nodes.c — the controller's events, its node table, and what probe results do to them
 * (health.c decides a node's state, panic.c the guard; this applies their verdicts).  Part of
 * the controller thread (controller_int.h).
 *
 * Must not: be called from another thread, or wait for I/O (events go to the history writer
 * and the database applier). */
#include "controller_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==========================================================================================
 * Events
 * ========================================================================================== */

void ctrl_queue_db_event(const kg_event *ev)
{
    if (ctl.n_db_events == ctl.cap_db_events) {
        if (ctl.cap_db_events >= DB_EVENTS_MAX) {
            /* the database has been away for long: keep the newest (local history has all) */
            memmove(ctl.db_events, ctl.db_events + 1, sizeof *ctl.db_events * (ctl.n_db_events - 1));
            ctl.n_db_events--;
            ctl.db_events_dropped++;
        } else {
            size_t nc = ctl.cap_db_events ? ctl.cap_db_events * 2 : 64;
            kg_event *g = realloc(ctl.db_events, nc * sizeof *g);
            if (!g) {
                ctl.db_events_dropped++;
                return;
            }
            ctl.db_events = g;
            ctl.cap_db_events = nc;
        }
    }
    ctl.db_events[ctl.n_db_events++] = *ev;
}

/* Events a job could not write go back in front of the queue, keeping their order. */
void ctrl_requeue_db_events(db_job *j)
{
    kg_event *queued = ctl.db_events;
    size_t n_queued = ctl.n_db_events;
    ctl.db_events = j->events;
    ctl.n_db_events = ctl.cap_db_events = j->n_events;
    j->events = NULL;
    j->n_events = 0;
    for (size_t i = 0; i < n_queued; i++)
        ctrl_queue_db_event(&queued[i]);
    free(queued);
}

void ctrl_record_event(kg_event *ev)
{
    if (!ev->ts_ms)
        ev->ts_ms = ctl.wall;
    events_submit(ev); /* local history: assigns the id, written by the history thread */
    webhook_submit(ev); /* queued for the webhook threads; never waits */
    if (ctl.leader)      /* followers keep history locally only */
        ctrl_queue_db_event(ev);
    if (ctl.n_recent == KG_RECENT_EVENTS) {
        memmove(ctl.recent, ctl.recent + 1, sizeof ctl.recent[0] * (KG_RECENT_EVENTS - 1));
        ctl.n_recent--;
    }
    ctl.recent[ctl.n_recent++] = *ev;
    log_info("event %s node=%s from=%s to=%s count=%d duration=%lldms: %s",
             event_kind_name(ev->kind), ev->node, ev->from, ev->to, ev->count,
             (long long)ev->duration_ms, ev->reason);
    ctl.dirty = true;
}


void ctrl_emit(kg_event_kind kind, const char *node, const char *from, const char *to,
                 int count, int64_t duration_ms, const char *fmt, ...)
{
    kg_event ev = {.kind = kind, .count = count, .duration_ms = duration_ms};
    snprintf(ev.node, sizeof ev.node, "%s", node ? node : "");
    snprintf(ev.from, sizeof ev.from, "%s", from ? from : "");
    snprintf(ev.to, sizeof ev.to, "%s", to ? to : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev.reason, sizeof ev.reason, fmt, ap);
    va_end(ap);
    ctrl_record_event(&ev);
}

/* The local history is written by another thread: surface its failures here. */
void ctrl_check_history(void)
{
    events_health_t h;
    events_health(&h);
    if (h.ok == ctl.history_ok)
        return;
    ctl.history_ok = h.ok;
    ctl.dirty = true;
    if (!h.ok)
        log_error("local history: %s (events stay in memory and in the cluster database)",
                  h.error);
    ctrl_emit(EV_HISTORY, NULL, h.ok ? "failing" : "ok", h.ok ? "ok" : "failing", 0, 0,
         h.ok ? "the local history takes writes again" : "local history failing: %.150s",
         h.error);
}

/* ==========================================================================================
 * Nodes
 * ========================================================================================== */

static int node_cmp(const void *a, const void *b)
{
    return strcmp(((const ctrl_node *)a)->v.id, ((const ctrl_node *)b)->v.id);
}

ctrl_node *ctrl_find_node(const char *id)
{
    if (!id || ctl.n_nodes == 0 || strlen(id) > KG_NODE_ID_MAX)
        return NULL; /* a longer id would be cut into another node's id */
    ctrl_node key;
    snprintf(key.v.id, sizeof key.v.id, "%s", id);
    return bsearch(&key, ctl.nodes, (size_t)ctl.n_nodes, sizeof *ctl.nodes, node_cmp);
}

static bool is_static(const char *id)
{
    for (int i = 0; i < ctl.cfg->n_static_nodes; i++)
        if (strcmp(ctl.cfg->static_nodes[i].id, id) == 0)
            return true;
    return false;
}

/* Host validity, with the reason and its fix when it is not usable. */
static void check_host(ctrl_node *cn)
{
    char herr[KG_REASON_MAX] = "";
    bool valid = netpolicy_host_allowed(&ctl.cfg->node_policy, cn->v.host, herr, sizeof herr) &&
                 hostcheck_node_id_valid(cn->v.id);
    if (!valid && cn->v.host_valid)
        log_warn("node %s: host %s not used (%s); it is not probed, routed or sent the key",
                 cn->v.id, cn->v.host, herr[0] ? herr : "bad node id");
    if (valid)
        cn->v.host_problem[0] = 0;
    else if (!hostcheck_node_id_valid(cn->v.id))
        snprintf(cn->v.host_problem, sizeof cn->v.host_problem,
                 "node id is not usable (1-50 characters of A-Z a-z 0-9 . _ -)");
    else if (cn->v.host[0] && !strchr(cn->v.host, ':'))
        snprintf(cn->v.host_problem, sizeof cn->v.host_problem,
                 "host '%.40s' has no port: set UPTIME_KUMA_NODE_HOST=host:port on the node",
                 cn->v.host);
    else
        snprintf(cn->v.host_problem, sizeof cn->v.host_problem, "%s",
                 herr[0] ? herr : "invalid host: empty");
    if (cn->v.host_valid != valid)
        ctl.dirty = true;
    cn->v.host_valid = valid;
}

/* A node back from failing is told to reconcile before it is routed — when kumaguard can tell
 * it anything (KUMA_API_KEY set); without a key the nodes' own crons are all there is. */
void ctrl_mark_returning(ctrl_node *cn)
{
    if (ctl.cfg->kuma_api_key)
        rsched_mark_returning(&cn->rs);
}

ctrl_node *ctrl_add_node(const char *id, const char *name, const char *host,
                           node_state persisted)
{
    ctrl_node *grown = realloc(ctl.nodes, (size_t)(ctl.n_nodes + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    ctl.nodes = grown;
    ctrl_node *n = &ctl.nodes[ctl.n_nodes++];
    memset(n, 0, sizeof *n);
    snprintf(n->v.id, sizeof n->v.id, "%s", id);
    snprintf(n->v.name, sizeof n->v.name, "%s", name && *name ? name : id);
    snprintf(n->v.host, sizeof n->v.host, "%s", host ? host : "");
    n->v.host_valid = true; /* so check_host logs a first problem */
    check_host(n);
    n->v.last_latency_ms = -1;
    health_init(&n->h, persisted, ctl.now);
    n->v.state = n->v.prev_state = n->h.state;
    n->v.state_since_ms = ctl.wall;
    n->v.monitor_limit = ctl.cfg->monitor_limit;
    n->v.is_static = is_static(id);
    rsched_init(&n->rs);
    if (n->h.state == NODE_OFFLINE)
        ctrl_mark_returning(n); /* monitors may have moved away while it was down */
    qsort(ctl.nodes, (size_t)ctl.n_nodes, sizeof *ctl.nodes, node_cmp);
    ctl.dirty = true;
    return ctrl_find_node(id);
}

/* Records a state change made by health.c: view, event, what it triggers. */
void ctrl_on_transition(ctrl_node *cn, health_transition t, const char *why)
{
    if (!t.changed)
        return;
    cn->v.prev_state = t.from;
    cn->v.state = t.to;
    cn->v.state_since_ms = ctl.wall;
    ctl.dirty = true;
    if (t.from == NODE_ONLINE || t.from == NODE_SUSPECT) {
        if (t.to != NODE_ONLINE && t.to != NODE_SUSPECT) {
            /* it left online: confirm against every other node before moving anything */
            panic_confirm_start(&ctl.panic, ctl.now, cn->fail_start_ms);
            prober_trigger_others(cn->v.id);
        }
    }
    if (t.to == NODE_OFFLINE)
        ctrl_mark_returning(cn); /* when it answers again, tell it first */
    ctrl_emit(EV_STATE_CHANGE, cn->v.id, node_state_name(t.from), node_state_name(t.to), 0, 0,
         "%s: %s -> %s (%s)", cn->v.id, node_state_name(t.from), node_state_name(t.to), why);
    /* suspect <-> online changes neither routing nor assignments */
    if (node_state_placeable(t.from) != node_state_placeable(t.to) ||
        node_state_routable(t.from) != node_state_routable(t.to)) {
        ctl.need_converge = true;
        ctl.converge_epoch = ctl.now;
        if (node_state_placeable(t.from) && !node_state_placeable(t.to))
            ctl.stale_plan_epoch = ctl.converge_epoch;
    }
}

/* Merges the node table into ctl.nodes: new rows are added, hosts follow the table, rows that
 * vanished (and are not static) are dropped. */
void ctrl_merge_node_rows(const store_node_row *rows, size_t n)
{
    for (int i = 0; i < ctl.n_nodes; i++)
        ctl.nodes[i].in_db = false;
    for (size_t r = 0; r < n; r++) {
        if (strlen(rows[r].id) > KG_NODE_ID_MAX) { /* never cut: a cut id names no node */
            log_warn("node row '%.50s...' ignored: node ids are at most %d characters",
                     rows[r].id, KG_NODE_ID_MAX);
            continue;
        }
        node_state db_state = node_state_parse(rows[r].status);
        ctrl_node *cn = ctrl_find_node(rows[r].id);
        if (!cn) {
            cn = ctrl_add_node(rows[r].id, rows[r].name, rows[r].host, db_state);
            if (!cn)
                continue;
            cn->synced = true;
            log_info("node %s (%s) discovered, starting %s (unproven)", cn->v.id, cn->v.host,
                     node_state_name(cn->h.state));
        }
        cn->in_db = true;
        if (!cn->synced) {
            /* static nodes were added before the table was read (and may have been probed
             * already): start them from what was persisted — maintenance, draining and
             * offline survive a restart */
            cn->synced = true;
            node_health h;
            health_init(&h, db_state, ctl.now);
            if (h.state != cn->h.state) {
                cn->h = h;
                cn->v.state = cn->v.prev_state = cn->h.state;
                cn->v.state_since_ms = ctl.wall;
                ctl.dirty = true;
                if (cn->h.state == NODE_OFFLINE)
                    ctrl_mark_returning(cn);
            }
        }
        if (!ctl.leader) {
            node_state to = policy_follower_state(cn->h.state, db_state);
            if (to != NODE_UNKNOWN)
                ctrl_on_transition(cn, health_set_operator(&cn->h, to, ctl.now),
                              "mirrored from the leader");
        }
        cn->v.is_primary = rows[r].is_primary;
        if (rows[r].name[0] && strcmp(cn->v.name, rows[r].name) != 0) {
            snprintf(cn->v.name, sizeof cn->v.name, "%s", rows[r].name);
            ctl.dirty = true;
        }
        if (strcmp(cn->v.host, rows[r].host) != 0) {
            if (cn->v.is_static) {
                ctl.static_dirty = true; /* the configuration wins over what a node registered */
            } else {
                snprintf(cn->v.host, sizeof cn->v.host, "%s", rows[r].host);
                ctl.dirty = true;
            }
        }
        check_host(cn);
        /* A Kuma node that restarts writes status='online' over ours: ours is the authority. */
        snprintf(cn->written, sizeof cn->written, "%s", rows[r].status);
    }
    int w = 0;
    for (int i = 0; i < ctl.n_nodes; i++) {
        ctrl_node *cn = &ctl.nodes[i];
        if (!cn->in_db && !cn->v.is_static) {
            log_info("node %s left the node table", cn->v.id);
            ctl.dirty = true;
            ctl.need_converge = true;
            ctl.converge_epoch = ctl.now;
            continue;
        }
        ctl.nodes[w++] = *cn;
    }
    ctl.n_nodes = w;
}

/* node.status (and last_seen) values that differ from what the table holds.  last_seen is
 * refreshed every refresh interval; once one node is due, every node at least half due comes
 * along, so the refreshes of nodes probed at different moments share a few writes per
 * interval instead of one each (1,000 nodes: ~2 writes per interval, not hundreds). */
store_node_state *ctrl_node_states_to_write(size_t *n_out)
{
    *n_out = 0;
    if (!ctl.leader || ctl.n_nodes == 0)
        return NULL;
    store_node_state *st = calloc((size_t)ctl.n_nodes, sizeof *st);
    if (!st)
        return NULL;
    int64_t every = ctl.cfg->refresh_interval_ms;
    bool any_due = false;
    for (int i = 0; i < ctl.n_nodes && !any_due; i++) {
        const ctrl_node *cn = &ctl.nodes[i];
        any_due = cn->v.last_seen_ms > cn->seen_written_ms &&
                  ctl.wall - cn->seen_written_ms >= every;
    }
    size_t n = 0;
    for (int i = 0; i < ctl.n_nodes; i++) {
        ctrl_node *cn = &ctl.nodes[i];
        const char *want = node_state_db_value(cn->h.state);
        bool status_dirty = strcmp(cn->written, want) != 0;
        bool seen_dirty = cn->v.last_seen_ms > cn->seen_written_ms &&
                          (status_dirty ||
                           (any_due && ctl.wall - cn->seen_written_ms >= every / 2));
        if (!status_dirty && !seen_dirty)
            continue;
        snprintf(st[n].id, sizeof st[n].id, "%s", cn->v.id);
        st[n].status = want;
        st[n].last_seen_ms = seen_dirty ? cn->v.last_seen_ms : 0;
        n++;
    }
    if (n == 0) {
        free(st);
        return NULL;
    }
    *n_out = n;
    return st;
}

/* ==========================================================================================
 * Probes and the panic guard
 * ========================================================================================== */

static void record_latency(ctrl_node *cn, const probe_result *r)
{
    double v = r->outcome == PROBE_OK ? r->latency_ms : -1;
    if (cn->v.n_latency == KG_LATENCY_HISTORY) {
        memmove(cn->v.latency_history, cn->v.latency_history + 1,
                sizeof(double) * (KG_LATENCY_HISTORY - 1));
        cn->v.n_latency--;
    }
    cn->v.latency_history[cn->v.n_latency++] = v;
    if (r->outcome == PROBE_OK) {
        int b = 0;
        while (b < 10 && r->latency_ms > kg_latency_bucket_bounds[b])
            b++;
        ctl.lat_buckets[b]++;
        ctl.lat_sum += r->latency_ms;
        ctl.lat_count++;
    }
}

panic_node ctrl_panic_node(const ctrl_node *cn)
{
    return (panic_node){.counted = health_probed(&cn->h) && cn->v.host_valid,
                        .failing = cn->h.consecutive_failures > 0 || cn->h.state == NODE_OFFLINE,
                        .fail_start_ms = cn->fail_start_ms,
                        .last_probe_ms = cn->last_probe_ms,
                        .id = cn->v.id};
}

void ctrl_update_panic(void)
{
    panic_node *pv = calloc((size_t)(ctl.n_nodes ? ctl.n_nodes : 1), sizeof *pv);
    if (!pv)
        return;
    for (int i = 0; i < ctl.n_nodes; i++)
        pv[i] = ctrl_panic_node(&ctl.nodes[i]);
    int released = ctl.panic.released;
    panic_change ch = panic_update(&ctl.panic, &ctl.pcfg, pv, ctl.n_nodes, ctl.now);
    if (ch == PANIC_ENGAGED) {
        log_error("PANIC GUARD: %s", ctl.panic.reason);
        ctrl_emit(EV_PANIC, NULL, "normal", "panic", ctl.panic.failing, 0, "%s", ctl.panic.reason);
        if (ctl.reb.running)
            ctrl_reb_finish("cancelled", "panic guard engaged");
    } else if (ch == PANIC_RELEASED) {
        log_warn("panic guard %s", ctl.panic.reason);
        ctrl_emit(EV_PANIC, NULL, "panic", "normal", ctl.panic.failing, 0, "panic guard %s",
             ctl.panic.reason);
        ctl.need_converge = true;
        ctl.converge_epoch = ctl.now;
    } else if (ctl.panic.released > released) {
        ctrl_emit(EV_PANIC, NULL, "panic", "panic", ctl.panic.failing, 0,
             "panic guard held %d s: the monitors of failing node %d of %d may move now "
             "(KUMAGUARD_PANIC_MAX_HOLD)", ctl.cfg->panic_max_hold_ms / 1000, ctl.panic.released,
             ctl.panic.failing);
        ctl.need_converge = true;
        ctl.converge_epoch = ctl.now;
    }
    if (ch != PANIC_UNCHANGED)
        ctl.dirty = true;
    free(pv);
}

/* After a start (or when a node registers), nodes that say they are online are proven by
 * `rise` probes first — a few fast intervals.  Plans wait for that, so adoption and failover
 * spread over every live node instead of the few proven first. */
bool ctrl_proving(void)
{
    for (int i = 0; i < ctl.n_nodes; i++) {
        const ctrl_node *cn = &ctl.nodes[i];
        if (node_state_placeable(cn->h.state) && !cn->h.proven && cn->v.host_valid)
            return true;
    }
    return false;
}

/* Moves wait for the confirmation round and obey the panic guard. */
bool ctrl_moves_allowed(void)
{
    panic_node *pv = calloc((size_t)(ctl.n_nodes ? ctl.n_nodes : 1), sizeof *pv);
    if (!pv)
        return false;
    for (int i = 0; i < ctl.n_nodes; i++)
        pv[i] = ctrl_panic_node(&ctl.nodes[i]);
    int64_t round = ctl.panic.confirm_since_ms;
    bool pending = panic_confirm_pending(&ctl.panic, &ctl.pcfg, pv, ctl.n_nodes, ctl.now);
    free(pv);
    if (round && !pending)
        log_debug("confirmation round over after %lld ms", (long long)(ctl.now - round));
    return !pending && panic_moves_allowed(&ctl.panic, ctl.now);
}

void ctrl_on_probe(const kg_msg *m)
{
    ctrl_node *cn = ctrl_find_node(m->node);
    if (!cn)
        return;
    const probe_result *r = &m->probe;
    bool ok = r->outcome == PROBE_OK;
    cn->last_probe_ms = ctl.now;
    cn->v.last_probe_ms = ctl.wall;
    cn->v.probes_total++;
    cn->v.http_status = r->http_status;
    cn->v.last_latency_ms = r->latency_ms;
    record_latency(cn, r);
    if (ok) {
        cn->v.last_seen_ms = ctl.wall;
        cn->fail_start_ms = 0;
        if (!cn->alive_since_ms)
            cn->alive_since_ms = ctl.now;
    } else {
        cn->v.probes_failed++;
        cn->v.last_failure_ms = ctl.wall;
        snprintf(cn->v.last_failure_reason, sizeof cn->v.last_failure_reason, "%s", r->reason);
        if (cn->h.consecutive_failures == 0)
            cn->fail_start_ms = ctl.now;
        cn->alive_since_ms = 0;
    }
    health_params p = {.fall = ctl.cfg->fall, .rise = ctl.cfg->rise,
                       .hold_online = ctl.cfg->kuma_api_key && rsched_must_tell(&cn->rs)};
    bool was_proven = cn->h.proven;
    health_transition t = health_apply(&cn->h, &p, ok, ctl.now);
    cn->v.consecutive_failures = cn->h.consecutive_failures;
    cn->v.consecutive_successes = cn->h.consecutive_successes;
    ctl.probe_dirty = true;
    ctrl_on_transition(cn, t, ok ? "probe ok" : r->reason);
    if (cn->h.proven && !was_proven && !t.changed) {
        /* proven after a start: it may receive monitors now */
        log_info("node %s proven by %d probes", cn->v.id, ctl.cfg->rise);
        ctl.need_converge = true;
        ctl.converge_epoch = ctl.now;
    }
}
