/* ctrl_plan.c — monitors and moves: plans (assign.c decides), their pace to what the nodes can
 * start before their cron and the reconcile calls (reconcile_sched.c decides), rebalancing.
 * Part of the controller thread (controller_int.h).
 *
 * Must not: apply anything itself: moves go to the database applier, calls to the reconcile
 * applier. */
#include "controller_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==========================================================================================
 * Monitors, planning, pacing
 * ========================================================================================== */

/* The planner's view of the nodes in the monitor set's index space.  Every node we know is
 * interned first, so plan_node[i] matches nametab index i; names only monitors mention are
 * UNKNOWN. */
static plan_node *build_plan_nodes(kg_nametab *tab, int *n_out)
{
    for (int i = 0; i < ctl.n_nodes; i++)
        if (nametab_intern(tab, ctl.nodes[i].v.id, strlen(ctl.nodes[i].v.id)) < 0)
            return NULL;
    int n = tab->n;
    plan_node *pn = calloc((size_t)(n ? n : 1), sizeof *pn);
    panic_node *pv = calloc((size_t)(ctl.n_nodes ? ctl.n_nodes : 1), sizeof *pv);
    if (!pn || !pv) {
        free(pn);
        free(pv);
        return NULL;
    }
    for (int i = 0; i < ctl.n_nodes; i++)
        pv[i] = ctrl_panic_node(&ctl.nodes[i]);
    bool revert_window = ctl.now >= ctl.next_revert_ms;
    for (int i = 0; i < n; i++) {
        pn[i].id = nametab_name(tab, i);
        pn[i].state = NODE_UNKNOWN;
        pn[i].limit = ctl.cfg->monitor_limit;
        ctrl_node *cn = ctrl_find_node(pn[i].id);
        if (!cn)
            continue;
        int k = (int)(cn - ctl.nodes);
        /* an unusable host cannot run monitors we could reach: treat like unknown */
        pn[i].state = cn->v.host_valid ? cn->h.state : NODE_UNKNOWN;
        /* not yet proven since we started: keeps what it runs, gets nothing new; held by the
         * panic guard: keeps what it runs */
        pn[i].keep = (node_state_placeable(cn->h.state) && !cn->h.proven) ||
                     panic_holds_node(&ctl.panic, pv, ctl.n_nodes, k);
        int64_t proven = health_proven_since(&cn->h);
        pn[i].revert_ok = revert_window && proven && cn->v.host_valid &&
                          ctl.now - proven >= ctl.cfg->recovery_hold_down_ms;
    }
    free(pv);
    *n_out = n;
    return pn;
}

/* Can the node be called at all (key configured, usable host, routable or returning)? */
static bool node_callable(const ctrl_node *cn)
{
    /* before the cluster's first user exists every node answers 401 (setup_watch.h) */
    if (!ctl.cfg->kuma_api_key || !cn->v.host_valid || !setup_watch_complete())
        return false;
    if (node_state_routable(cn->h.state))
        return true;
    return cn->h.state == NODE_RECOVERING && rsched_must_tell(&cn->rs);
}

/* Pacing: keeps only the moves whose target can start them (and whose live source can stop
 * them) before that node's next cron.  Returns the number kept (moves compacted in place). */
static size_t pace_moves(plan_move *moves, size_t n, const kg_nametab *tab)
{
    if (!ctl.cfg->reconcile_pacing || n == 0)
        return n;
    int nn = tab->n;
    int64_t *room = malloc(((size_t)nn + 1) * sizeof *room);
    bool *charge = calloc((size_t)nn + 1, sizeof *charge);
    if (!room || !charge) {
        free(room);
        free(charge);
        return n;
    }
    int64_t off = ctl.wall - ctl.now;
    for (int i = 0; i < nn; i++) {
        ctrl_node *cn = ctrl_find_node(nametab_name(tab, i));
        room[i] = -1; /* unlimited: not a node we can reach */
        if (!cn || !cn->v.host_valid)
            continue;
        bool calls = ctl.cfg->kuma_api_key != NULL;
        room[i] = rsched_room_ms(&cn->rs, &ctl.rcfg, calls, cn->alive_since_ms, ctl.now, off);
        charge[i] = cn->alive_since_ms != 0; /* a dead source is told when it returns */
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t from = policy_move_from(&moves[i]), to = policy_move_to(&moves[i]);
        if (from == to) {
            moves[w++] = moves[i];
            continue;
        }
        bool fits = true;
        if (to >= 0 && room[to] >= 0 && room[to] < ctl.rcfg.start_ms)
            fits = false;
        if (from >= 0 && charge[from] && room[from] >= 0 && room[from] < ctl.rcfg.stop_ms)
            fits = false;
        if (!fits)
            continue;
        if (to >= 0 && room[to] >= 0)
            room[to] -= ctl.rcfg.start_ms;
        if (from >= 0 && charge[from] && room[from] >= 0)
            room[from] -= ctl.rcfg.stop_ms;
        moves[w++] = moves[i];
    }
    free(room);
    free(charge);
    return w;
}

/* Our own applied moves, replayed on the in-memory monitor set, so the next plan needs no
 * re-read.  Only when every move was applied (a skipped row changed under us: re-read). */
static void patch_monitors(const plan_move *moves, size_t n, const kg_nametab *tab)
{
    for (size_t i = 0; i < n; i++) {
        const plan_move *mv = &moves[i];
        /* moves were planned on ctl.mon (same indexes) unless a re-read replaced it since */
        if (mv->monitor_index >= ctl.mon.rows.n ||
            ctl.mon.rows.monitors[mv->monitor_index].id != mv->monitor_id) {
            ctl.want_monitors = true;
            ctl.mon.version++; /* earlier moves of this batch were patched */
            return;
        }
        plan_monitor *m = &ctl.mon.rows.monitors[mv->monitor_index];
        int32_t to = -1;
        if (mv->to >= 0) {
            const char *name = nametab_name(tab, mv->to);
            to = name ? nametab_intern(&ctl.mon.tab, name, strlen(name)) : -1;
        }
        switch (mv->kind) {
        case MOVE_SET_OVERRIDE:
            m->over = to;
            m->ours = 1;
            break;
        case MOVE_CLEAR_OVERRIDE:
            m->over = -1;
            m->ours = 0;
            break;
        case MOVE_SET_HOME:
            m->home = to;
            if (mv->clear_override) {
                m->over = -1;
                m->ours = 0;
            }
            break;
        }
    }
    ctl.mon.version++;
    ctl.dirty = true;
}

/* After the database applied (or refused) moves: counters, the monitor set, reconcile work,
 * events. */
void ctrl_applied_moves(const db_job *j)
{
    if (!j->moves_done)
        return;
    if (j->applied.skipped) {
        log_info("%s: %zu of %zu rows changed meanwhile and were left alone", j->what,
                 j->applied.skipped, j->n_moves);
        ctl.want_monitors = true;
    } else {
        patch_monitors(j->moves, j->n_moves, &j->moves_tab);
    }
    ctl.moved_total += (int64_t)j->applied.applied;
    /* every node whose set changed has work: starts where monitors arrive, stops where they
     * leave (counting skipped moves too: an over-estimate only lengthens a deadline) */
    for (size_t i = 0; i < j->n_moves; i++) {
        int32_t from = policy_move_from(&j->moves[i]), to = policy_move_to(&j->moves[i]);
        if (from == to)
            continue;
        ctrl_node *a = from >= 0 ? ctrl_find_node(nametab_name(&j->moves_tab, from)) : NULL;
        ctrl_node *b = to >= 0 ? ctrl_find_node(nametab_name(&j->moves_tab, to)) : NULL;
        if (a)
            rsched_add_work(&a->rs, 0, 1, ctl.now);
        if (b)
            rsched_add_work(&b->rs, 1, 0, ctl.now);
    }
}

/* Converge moves: events per source node, counters. */
static void converge_events(const plan_move *moves, size_t n, const kg_nametab *tab,
                            bool truncated, int64_t duration_ms)
{
    plan_events_node *pe = calloc((size_t)tab->n + 1, sizeof *pe);
    if (!pe)
        return;
    for (int i = 0; i < tab->n; i++) {
        ctrl_node *cn = ctrl_find_node(nametab_name(tab, i));
        pe[i] = (plan_events_node){.state = cn ? cn->h.state : NODE_UNKNOWN,
                                   .known = cn != NULL,
                                   .reason = cn ? cn->v.last_failure_reason : ""};
    }
    kg_event *evs = NULL;
    int k = plan_events(moves, n, tab, pe, truncated, duration_ms, &evs);
    for (int i = 0; i < k; i++) {
        if (evs[i].kind == EV_FAILOVER)
            ctl.failovers_total++;
        else if (evs[i].kind == EV_REVERT)
            ctl.reverts_total++;
        else if (evs[i].kind == EV_ADOPTION)
            ctl.adoptions_total++;
        ctrl_record_event(&evs[i]);
    }
    free(evs);
    free(pe);
}

int64_t ctrl_min_due(int64_t a, int64_t b) { return (b > 0 && b < a) ? b : a; }

/* Plans on the current monitor set and hands the (paced) moves to the database. */
void ctrl_converge(void)
{
    if (!ctl.leader || !ctl.db_ok || !ctl.mon.loaded || !ctrl_db_idle() || ctl.reb.running)
        return;
    /* A state change asks for monitors read after it (rows Kuma changed meanwhile count).
     * When a node stopped taking monitors, its monitors move at once on the set we have (a
     * re-read of a million rows takes about a second) and the read asked for here follows
     * in the same job, after the moves; a second plan on it moves what Kuma changed
     * meanwhile.  Every move is guarded by the row's old values, so a row changed since our
     * last read is skipped, never overwritten. */
    bool stale = ctl.need_converge && ctl.mon.as_of_ms < ctl.converge_epoch;
    bool node_left = ctl.stale_plan_epoch && ctl.stale_plan_epoch == ctl.converge_epoch;
    if (stale) {
        if (!ctl.want_monitors)
            log_debug("converge asks for monitors read after the change %lld ms ago%s",
                      (long long)(ctl.now - ctl.converge_epoch),
                      node_left ? "; a node left: planning now as well" : "");
        ctl.want_monitors = true;
        if (!node_left)
            return;
    }
    ctl.stale_plan_epoch = 0;
    if (ctl.need_converge || ctl.now >= ctl.next_converge_ms) {
        ctl.next_converge_ms = ctl.now + ctl.cfg->refresh_interval_ms;
    } else {
        return;
    }
    ctl.need_converge = stale; /* planned on the set we had: plan again on the fresh read */
    /* wake up when a recovered node's hold-down ends, not a refresh interval later */
    for (int i = 0; i < ctl.n_nodes; i++) {
        int64_t proven = health_proven_since(&ctl.nodes[i].h);
        int64_t end = proven + ctl.cfg->recovery_hold_down_ms;
        if (proven && end > ctl.now)
            ctl.next_converge_ms = ctrl_min_due(ctl.next_converge_ms, end);
    }
    int64_t t0 = kg_mono_ms();
    int n_nodes = 0;
    plan_node *pn = build_plan_nodes(&ctl.mon.tab, &n_nodes);
    if (!pn)
        return;
    plan_view v = {.nodes = pn, .n_nodes = n_nodes, .monitors = ctl.mon.rows.monitors,
                   .n_monitors = ctl.mon.rows.n};
    plan_options o;
    plan_options_default(&o);
    o.revert_batch = ctl.cfg->revert_batch_size;
    o.tolerance = ctl.cfg->balance_tolerance;
    plan_result r;
    plan_result_init(&r);
    if (plan_converge(&v, &o, &r) != 0) {
        log_error("planner out of memory");
        goto out;
    }
    if (r.n_no_target)
        log_warn("%d monitors need a node but none is online and proven; will retry",
                 r.n_no_target);
    if (r.n_moves == 0)
        goto out;
    size_t planned = r.n_moves;
    size_t kept = pace_moves(r.moves, r.n_moves, &ctl.mon.tab);
    if (kept < planned) {
        /* while moves wait, converge runs every second: a pass that moves nothing is debug */
        kg_log(kept ? LOG_INFO : LOG_DEBUG, "converge: %zu of %zu moves now, the rest when the "
               "nodes can start them before their cron", kept, planned);
        ctl.next_converge_ms = ctrl_min_due(ctl.next_converge_ms, ctl.now + 1000);
    }
    if (kept == 0)
        goto out;
    db_job *j = ctrl_build_job(r.moves, kept, &ctl.mon.tab, "converge");
    if (!j)
        goto out;
    r.moves = NULL; /* the job owns them now */
    if (!ctrl_submit_job(j)) {
        db_job_free(j);
        goto out;
    }
    ctl.applying = APPLY_CONVERGE;
    int64_t dur = kg_mono_ms() - t0;
    converge_events(j->moves, j->n_moves, &j->moves_tab,
                    r.reverts_truncated || kept < planned, dur);
    if (r.n_over_capacity)
        ctrl_emit(EV_CAPACITY_WARNING, NULL, "", "", r.n_over_capacity, 0,
             "%d monitors placed on nodes already at MONITOR_LIMIT_PER_NODE=%d: running over "
             "the limit beats not running", r.n_over_capacity, ctl.cfg->monitor_limit);
    if (r.n_revert) {
        ctl.next_revert_ms = ctl.now + ctl.cfg->revert_batch_interval_ms;
        if (r.reverts_truncated)
            ctl.next_converge_ms = ctrl_min_due(ctl.next_converge_ms, ctl.next_revert_ms);
    }
    log_info("converge: %zu moves planned, %zu sent in %lld ms (failover %d, revert %d, "
             "adopt %d)", planned, kept, (long long)dur, r.n_failover, r.n_revert, r.n_adopt);
out:
    plan_result_free(&r);
    free(pn);
}

/* ==========================================================================================
 * Rebalancing (planned on a fresh read, applied in paced, cancellable batches)
 * ========================================================================================== */

void ctrl_reb_clear(void)
{
    free(ctl.reb.moves);
    nametab_free(&ctl.reb.tab);
    memset(&ctl.reb, 0, sizeof ctl.reb);
}

void ctrl_reb_finish(const char *phase, const char *error)
{
    snprintf(ctl.reb_view.phase, sizeof ctl.reb_view.phase, "%s", phase);
    ctl.reb_view.running = false;
    ctl.reb_view.finished_ms = ctl.wall;
    ctl.reb_view.moved = (int)ctl.reb.applied;
    snprintf(ctl.reb_view.last_error, sizeof ctl.reb_view.last_error, "%s", error ? error : "");
    ctl.rebalances_total++;
    ctrl_emit(ctl.reb.kind, NULL, "", "", (int)ctl.reb.applied, ctl.wall - ctl.reb.started_wall_ms,
         "%s %s by %s: %zu of %zu home changes applied, %zu skipped (changed meanwhile)%s%s",
         ctl.reb.kind == EV_FORCE_REBALANCE ? "force rebalance" : "rebalance", phase, ctl.reb.actor,
         ctl.reb.applied, ctl.reb.n, ctl.reb.skipped, error ? ": " : "", error ? error : "");
    ctrl_reb_clear();
    ctl.dirty = true;
}

void ctrl_reb_request(kg_event_kind kind, const char *actor, kg_reply *reply)
{
    if (ctl.reb.running || ctl.reb_req.pending) {
        ctrl_reply(reply, 409, "busy", "a rebalance is already running; cancel it first");
        return;
    }
    if (!ctl.leader) {
        ctrl_reply(reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    if (ctl.panic.engaged) {
        ctrl_reply(reply, 409, "panic", ctl.panic.reason);
        return;
    }
    if (!ctl.db_ok) {
        ctrl_reply(reply, 503, "database_unavailable", ctl.db_error);
        return;
    }
    int unproven = 0;
    for (int i = 0; i < ctl.n_nodes; i++)
        if (node_state_placeable(ctl.nodes[i].h.state) && !ctl.nodes[i].h.proven &&
            ctl.nodes[i].v.host_valid)
            unproven++;
    if (unproven) {
        /* a plan without them would pile their share onto the others */
        char detail[160];
        snprintf(detail, sizeof detail,
                 "%d node(s) have not passed %d probes since kumaguard started; retry shortly",
                 unproven, ctl.cfg->rise);
        ctrl_reply(reply, 409, "nodes_unproven", detail);
        return;
    }
    ctl.reb_req = (rebalance_request){.pending = true, .kind = kind, .reply = reply,
                                    .asked_ms = ctl.now};
    snprintf(ctl.reb_req.actor, sizeof ctl.reb_req.actor, "%s", actor && actor[0] ? actor : "api");
    if (reply) {
        pthread_mutex_lock(&reply->lock);
        reply->refs++; /* kept until the plan is made */
        pthread_mutex_unlock(&reply->lock);
    }
    ctl.want_monitors = true;
}

/* The monitors were re-read for a requested rebalance: plan it and start. */
void ctrl_reb_plan(void)
{
    rebalance_request q = ctl.reb_req;
    memset(&ctl.reb_req, 0, sizeof ctl.reb_req);
    int n_nodes = 0;
    plan_node *pn = build_plan_nodes(&ctl.mon.tab, &n_nodes);
    plan_view v = {.nodes = pn, .n_nodes = n_nodes, .monitors = ctl.mon.rows.monitors,
                   .n_monitors = ctl.mon.rows.n};
    plan_options o;
    plan_options_default(&o);
    o.tolerance = ctl.cfg->balance_tolerance;
    plan_result r;
    plan_result_init(&r);
    int rc = pn ? (q.kind == EV_FORCE_REBALANCE ? plan_force_all(&v, &o, &r)
                                                : plan_rebalance(&v, &o, &r))
                : -1;
    free(pn);
    if (rc != 0) {
        plan_result_free(&r);
        ctrl_reply(q.reply, 500, "planner_failed", "out of memory");
        reply_put(q.reply);
        return;
    }
    if (r.n_moves == 0) {
        plan_result_free(&r);
        if (!q.reply) {
            /* automatic attempt that cannot improve anything (pins, limits): no event, and
             * wait longer before the next attempt */
            ctl.next_auto_rebalance_ms = ctl.now + 10 * 60000;
            return;
        }
        ctl.reb = (rebalance_op){.kind = q.kind, .started_ms = ctl.now, .started_wall_ms = ctl.wall};
        snprintf(ctl.reb.actor, sizeof ctl.reb.actor, "%s", q.actor);
        snprintf(ctl.reb_view.operation, sizeof ctl.reb_view.operation, "%s",
                 q.kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance");
        ctl.reb_view.started_ms = ctl.wall;
        ctl.reb_view.total = 0;
        ctrl_reb_finish("done", NULL);
        ctrl_reply(q.reply, 200, "", "already balanced: nothing to move");
        reply_put(q.reply);
        return;
    }
    ctl.reb = (rebalance_op){.running = true, .kind = q.kind, .moves = r.moves, .n = r.n_moves,
                           .started_ms = ctl.now, .next_batch_ms = ctl.now,
                           .started_wall_ms = ctl.wall};
    if (nametab_copy(&ctl.reb.tab, &ctl.mon.tab) != 0) {
        r.moves = NULL;
        ctrl_reb_clear();
        plan_result_free(&r);
        ctrl_reply(q.reply, 500, "planner_failed", "out of memory");
        reply_put(q.reply);
        return;
    }
    snprintf(ctl.reb.actor, sizeof ctl.reb.actor, "%s", q.actor);
    r.moves = NULL; /* ownership moved to the operation */
    plan_result_free(&r);
    snprintf(ctl.reb_view.operation, sizeof ctl.reb_view.operation, "%s",
             q.kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance");
    ctl.reb_view.started_ms = ctl.wall;
    ctl.reb_view.total = (int)ctl.reb.n;
    ctl.reb_view.moved = 0;
    ctl.reb_view.eta_ms = 0;
    ctl.reb_view.finished_ms = 0;
    ctl.reb_view.last_error[0] = 0;
    ctl.reb_view.running = true;
    snprintf(ctl.reb_view.phase, sizeof ctl.reb_view.phase, "applying");
    ctl.dirty = true;
    char detail[200];
    snprintf(detail, sizeof detail, "%zu home changes planned", ctl.reb.n);
    ctrl_reply(q.reply, 202, "", detail);
    reply_put(q.reply);
}

void ctrl_reb_step(void)
{
    if (!ctl.reb.running || ctl.now < ctl.reb.next_batch_ms || ctl.applying != APPLY_NONE)
        return;
    if (!ctl.leader || ctl.panic.engaged) {
        ctrl_reb_finish("cancelled", ctl.panic.engaged ? "panic guard engaged" : "no longer the leader");
        return;
    }
    if (!ctrl_db_idle())
        return;
    if (ctl.reb.done >= ctl.reb.n) {
        ctrl_reb_finish("done", NULL);
        return;
    }
    size_t batch = (size_t)ctl.cfg->move_batch_size;
    size_t n = ctl.reb.n - ctl.reb.done < batch ? ctl.reb.n - ctl.reb.done : batch;
    for (size_t i = ctl.reb.done; i < ctl.reb.done + n; i++) {
        ctrl_node *cn = ctrl_find_node(nametab_name(&ctl.reb.tab, ctl.reb.moves[i].to));
        if (!cn || !health_placeable(&cn->h)) {
            /* the plan is stale: a target left since it was made */
            ctl.need_converge = true;
            ctl.converge_epoch = ctl.now;
            ctrl_reb_finish("cancelled", "a target node is no longer online; plan again");
            return;
        }
    }
    plan_move *batch_moves = malloc(n * sizeof *batch_moves);
    if (!batch_moves)
        return;
    memcpy(batch_moves, ctl.reb.moves + ctl.reb.done, n * sizeof *batch_moves);
    size_t kept = pace_moves(batch_moves, n, &ctl.reb.tab);
    if (kept == 0) {
        free(batch_moves);
        ctl.reb.next_batch_ms = ctl.now + 1000; /* the nodes are busy: wait for room */
        return;
    }
    /* the paced-out moves go to the end of the remaining list, to be tried again */
    if (kept < n) {
        plan_move *rest = malloc(n * sizeof *rest);
        if (!rest) {
            free(batch_moves);
            return;
        }
        size_t r = 0;
        for (size_t i = ctl.reb.done; i < ctl.reb.done + n; i++) {
            bool sent = false;
            for (size_t k = 0; k < kept && !sent; k++)
                sent = batch_moves[k].monitor_id == ctl.reb.moves[i].monitor_id;
            if (!sent)
                rest[r++] = ctl.reb.moves[i];
        }
        memcpy(ctl.reb.moves + ctl.reb.done, batch_moves, kept * sizeof *batch_moves);
        memcpy(ctl.reb.moves + ctl.reb.done + kept, rest, r * sizeof *rest);
        free(rest);
    }
    const char *what = ctl.reb.kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance";
    db_job *j = ctrl_build_job(batch_moves, kept, &ctl.reb.tab, what);
    if (!j) {
        free(batch_moves);
        return;
    }
    if (!ctrl_submit_job(j)) {
        db_job_free(j);
        return;
    }
    ctl.applying = APPLY_REBALANCE;
}

/* Called from on_db_done (via applied_moves' caller) for a rebalance batch. */
void ctrl_reb_batch_done(const db_job *j)
{
    if (!j->moves_done)
        return;
    ctl.reb.done += j->n_moves;
    ctl.reb.applied += j->applied.applied;
    ctl.reb.skipped += j->applied.skipped;
    ctl.reb_view.moved = (int)ctl.reb.done;
    int64_t elapsed = ctl.now - ctl.reb.started_ms;
    if (ctl.reb.done > 0)
        ctl.reb_view.eta_ms = ctl.reb.started_wall_ms +
                            (int64_t)((double)elapsed * (double)ctl.reb.n / (double)ctl.reb.done);
    ctl.reb.next_batch_ms = ctl.now + ctl.cfg->move_batch_interval_ms;
    ctl.dirty = true;
    if (ctl.reb.done >= ctl.reb.n)
        ctrl_reb_finish("done", NULL);
}

void ctrl_maybe_auto_rebalance(void)
{
    /* checked on every fresh monitor set; at most one automatic rebalance a minute */
    if (ctl.cfg->auto_rebalance_spread <= 0 || ctl.now < ctl.next_auto_rebalance_ms || ctl.reb.running ||
        ctl.reb_req.pending || !ctl.leader || ctl.panic.engaged || !ctl.db_ok || !ctl.mon.loaded ||
        ctl.mon.as_of_ms <= ctl.auto_checked_ms || ctrl_proving())
        return;
    ctl.auto_checked_ms = ctl.mon.as_of_ms;
    int *load = calloc((size_t)ctl.mon.tab.n + 1, sizeof *load);
    int *nl = calloc((size_t)ctl.n_nodes + 1, sizeof *nl);
    node_state *ns = calloc((size_t)ctl.n_nodes + 1, sizeof *ns);
    if (load && nl && ns) {
        plan_view v = {.n_nodes = ctl.mon.tab.n, .monitors = ctl.mon.rows.monitors,
                       .n_monitors = ctl.mon.rows.n};
        plan_count_load(&v, load);
        for (int i = 0; i < ctl.n_nodes; i++) {
            int32_t idx = nametab_find(&ctl.mon.tab, ctl.nodes[i].v.id, strlen(ctl.nodes[i].v.id));
            nl[i] = idx >= 0 ? load[idx] : 0;
            ns[i] = ctl.nodes[i].h.proven || !node_state_placeable(ctl.nodes[i].h.state)
                        ? ctl.nodes[i].h.state
                        : NODE_RECOVERING; /* unproven: not settled */
        }
        double spread = 0;
        if (policy_auto_rebalance(nl, ns, ctl.n_nodes, ctl.cfg->auto_rebalance_spread, &spread)) {
            ctl.next_auto_rebalance_ms = ctl.now + 60000;
            log_info("load spread %.2f exceeds REBALANCE_AUTO_SPREAD=%.2f: rebalancing", spread,
                     ctl.cfg->auto_rebalance_spread);
            ctrl_reb_request(EV_REBALANCE, "auto (load spread)", NULL);
        }
    }
    free(load);
    free(nl);
    free(ns);
}

/* ==========================================================================================
 * Reconcile calls
 * ========================================================================================== */

static const char *reconcile_cause(rsched_result r)
{
    switch (r) {
    case RS_RATE_LIMITED:
        return "429 too many requests: the node's API_RATE_LIMIT (per client address, per 15 "
               "minutes) is spent; raise API_RATE_LIMIT on the nodes";
    case RS_UNAUTHORIZED:
        return "401: the node has no first user yet (finish setup on the primary node), or "
               "KUMA_API_KEY starts with 'Bearer ' (send the key alone)";
    case RS_TIMEOUT:
        return "no answer by the deadline: the node may still be running it; no new call until "
               "it answers probes again";
    case RS_CONNECT_FAILED:
        return "cannot connect";
    default:
        return "unexpected answer";
    }
}

/* Lets a recovering node that has been told (by our call or its cron) come online. */
static void release_if_told(ctrl_node *cn)
{
    if (cn->h.state != NODE_RECOVERING || rsched_must_tell(&cn->rs))
        return;
    health_params p = {.fall = ctl.cfg->fall, .rise = ctl.cfg->rise};
    ctrl_on_transition(cn, health_release_hold(&cn->h, &p, ctl.now),
                  "told to drop what moved away while it was failing");
}

void ctrl_on_reconcile_done(const kg_msg *m)
{
    ctrl_node *cn = ctrl_find_node(m->node);
    if (!cn)
        return;
    rsched_result r = (rsched_result)m->status;
    rsched_finish(&cn->rs, &ctl.rcfg, r, m->http_status, ctl.now, ctl.wall - ctl.now);
    ctl.reconcile_calls++;
    ctl.dirty = true;
    if (r != RS_OK) {
        ctl.reconcile_failures++;
        log_warn("reconcile call to %s: %s (%s)", cn->v.id, rsched_result_name(r), m->text);
        /* refusals say their cause and fix once per streak, not once per call */
        if (cn->rs.failures == 1 || r == RS_RATE_LIMITED || r == RS_UNAUTHORIZED ||
            r == RS_TIMEOUT)
            ctrl_emit(EV_RECONCILE_FAILED, cn->v.id, "", rsched_result_name(r), 0, (int64_t)m->value,
                 "reconcile call to %s: %s%s%s", cn->v.id, reconcile_cause(r),
                 m->text[0] ? " — " : "", m->text);
    }
    release_if_told(cn);
}

/* Starts the reconcile calls the scheduler allows; returns when to look again. */
int64_t ctrl_schedule_calls(void)
{
    int64_t due = 0;
    int64_t off = ctl.wall - ctl.now;
    for (int i = 0; i < ctl.n_nodes; i++) {
        ctrl_node *cn = &ctl.nodes[i];
        rsched_decision d = rsched_next(&cn->rs, &ctl.rcfg, node_callable(cn), cn->alive_since_ms,
                                        ctl.now, off);
        if (d.call) {
            log_debug("reconcile call to %s: deadline %lld ms, %d starts and %d stops asked, "
                      "answering probes for %lld ms%s", cn->v.id, (long long)d.deadline_ms,
                      cn->rs.starts, cn->rs.stops,
                      (long long)(cn->alive_since_ms ? ctl.now - cn->alive_since_ms : -1),
                      cn->rs.call_tell ? ", told first" : "");
            if (reconcile_worker_call(cn->v.id, cn->v.host, d.deadline_ms) != 0)
                rsched_finish(&cn->rs, &ctl.rcfg, RS_CONNECT_FAILED, 0, ctl.now, off);
            ctl.dirty = true;
        } else if (d.wake_ms > ctl.now && (due == 0 || d.wake_ms < due)) {
            due = d.wake_ms;
        }
        release_if_told(cn);
    }
    return due;
}
