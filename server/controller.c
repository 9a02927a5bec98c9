/* controller.c — the controller thread: the single owner of mutable cluster state, and the
 * place where inputs become decisions.
 *
 * Like relayd's split (hce checks, pfe applies), this thread decides and other threads apply:
 *   inputs   probe results (prober), operator actions (HTTP threads), finished database jobs
 *            (db_worker), reconcile outcomes (reconcile.c), nginx outcomes (nginx_worker);
 *   decide   node state (health.c), the panic guard (panic.c), moves (assign.c), their pace
 *            and the reconcile calls (reconcile_sched.c), small rules (policy.c), event
 *            wording (plan_events.c);
 *   apply    everything with I/O is handed over: database work as one job at a time to
 *            db_worker, calls to the reconcile thread, renders to the nginx thread, history to
 *            the events writer — none of them can stall this loop.
 * Every decision is in a module of its own with unit tests; this file keeps the state,
 * sequences the steps and publishes snapshots.
 *
 * Clocks: every timer is on the monotonic clock (kg_mono_ms); wall-clock times exist only for
 * what is shown or stored (kg_wall_ms), and for the nodes' :00 cron.
 *
 * Must not: be called from other threads (they use mailbox.h / snapshot.h), wait for a
 * database, an HTTP peer or a disk, or probe nodes itself. */
#include "controller.h"
#include "controller_int.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ctrl_state ctl;

void ctrl_refresh_clocks(void)
{
    ctl.now = kg_mono_ms();
    ctl.wall = kg_wall_ms();
}

/* Wall-clock time of a monotonic instant (for display). */
int64_t ctrl_to_wall(int64_t mono) { return mono ? mono + (ctl.wall - ctl.now) : 0; }

uint32_t ctrl_next_rand(void)
{
    ctl.rng ^= ctl.rng << 13;
    ctl.rng ^= ctl.rng >> 17;
    ctl.rng ^= ctl.rng << 5;
    return ctl.rng;
}

/* ==========================================================================================
 * Operator actions
 * ========================================================================================== */

static void on_node_action(const kg_msg *m, node_state target)
{
    ctrl_node *cn = ctrl_find_node(m->node);
    if (!cn) {
        ctrl_reply(m->reply, 404, "unknown_node", "no node with that id");
        return;
    }
    if (!ctl.leader) {
        ctrl_reply(m->reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    node_state before = cn->h.state;
    if (target == NODE_ONLINE && (before == NODE_ONLINE || before == NODE_SUSPECT)) {
        ctrl_reply(m->reply, 200, "", "node is already enabled");
        return;
    }
    health_transition t = health_set_operator(&cn->h, target, ctl.now);
    cn->v.prev_state = before;
    cn->v.state = cn->h.state;
    cn->v.state_since_ms = ctl.wall;
    cn->v.consecutive_failures = cn->v.consecutive_successes = 0;
    ctl.need_converge = true;
    ctl.converge_epoch = ctl.now;
    ctl.dirty = true;
    ctrl_emit(EV_OPERATOR, cn->v.id, node_state_name(before), node_state_name(cn->h.state), 0, 0,
         "%s set %s to %s", m->actor[0] ? m->actor : "operator", cn->v.id,
         target == NODE_ONLINE ? "enabled (recovering until it passes its probes)"
                               : node_state_name(target));
    if (t.changed && target == NODE_ONLINE)
        prober_trigger_all();
    char detail[128];
    snprintf(detail, sizeof detail, "%s is now %s", cn->v.id, node_state_name(cn->h.state));
    ctrl_reply(m->reply, 200, "", detail);
}

static void on_panic_override(const kg_msg *m)
{
    if (!ctl.leader) {
        ctrl_reply(m->reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    const char *actor = m->actor[0] ? m->actor : "operator";
    if (!panic_override(&ctl.panic, actor)) {
        ctrl_reply(m->reply, 409, "not_engaged", "the panic guard is not engaged");
        return;
    }
    ctrl_emit(EV_PANIC, NULL, "panic", "override", ctl.panic.failing, 0,
         "%s allowed failover while %d of %d nodes fail (for this outage)", actor,
         ctl.panic.failing, ctl.panic.total);
    ctl.need_converge = true;
    ctl.converge_epoch = ctl.now;
    ctl.dirty = true;
    ctrl_reply(m->reply, 200, "", "failover allowed for this outage");
}

/* An operator's move / pin / unpin: queued for the database applier, which reads, validates
 * and writes it (monitor_ops.c, fenced, all or nothing); the answer comes with the job. */
static void on_monitor_op(kg_msg *m)
{
    if (!ctl.leader) {
        ctrl_reply(m->reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    if (!ctl.db_ok) {
        ctrl_reply(m->reply, 503, "database_unavailable", ctl.db_error);
        return;
    }
    if (ctl.n_monitor_ops == MONITOR_OPS_QUEUED || !m->data) {
        ctrl_reply(m->reply, 503, "busy", "too many monitor operations waiting; retry shortly");
        return;
    }
    queued_monitor_op *q = &ctl.monitor_ops[ctl.n_monitor_ops++];
    q->req = m->data;
    m->data = NULL; /* the queue owns it now */
    q->reply = m->reply;
    if (q->reply) {
        pthread_mutex_lock(&q->reply->lock);
        q->reply->refs++;
        pthread_mutex_unlock(&q->reply->lock);
    }
    snprintf(q->actor, sizeof q->actor, "%s", m->actor[0] ? m->actor : "operator");
}

/* Hands the oldest queued monitor operation to the database applier. */
static void submit_monitor_op(void)
{
    if (!ctl.n_monitor_ops || !ctrl_db_idle() || ctl.applying != APPLY_NONE)
        return;
    queued_monitor_op q = ctl.monitor_ops[0];
    if (!ctl.leader) {
        ctrl_reply(q.reply, 409, "not_leader", "another kumaguard instance holds the lease");
    } else {
        db_job *j = ctrl_build_job(NULL, 0, NULL, "");
        if (!j)
            return;
        j->monitor_op = q.req;
        snprintf(j->actor, sizeof j->actor, "%s", q.actor);
        if (!ctrl_submit_job(j)) {
            j->monitor_op = NULL; /* still queued */
            db_job_free(j);
            return;
        }
        q.req = NULL;
        ctl.applying = APPLY_MONITOR_OP;
        ctl.monitor_op_reply = q.reply;
        q.reply = NULL;
    }
    free(q.req);
    reply_put(q.reply);
    memmove(ctl.monitor_ops, ctl.monitor_ops + 1, sizeof ctl.monitor_ops[0] * (size_t)--ctl.n_monitor_ops);
}

/* The applier ran an operator's monitor operation: answer, record, tell the nodes. */
static void monitor_op_done(const db_job *j)
{
    kg_reply *reply = ctl.monitor_op_reply;
    ctl.monitor_op_reply = NULL;
    const monitor_ops_outcome *o = &j->monitor_op_outcome;
    if (!j->monitor_op_done) {
        ctrl_reply(reply, j->rc == STORE_FENCED ? 409 : 503,
                     j->rc == STORE_FENCED ? "not_leader" : "database_unavailable",
                     j->error[0] ? j->error : ctl.db_error);
        reply_put(reply);
        return;
    }
    if (o->changed > 0) {
        ctrl_emit(EV_MONITOR, o->ev_node, o->ev_from, o->ev_to, (int)o->changed,
             j->finished_mono_ms - j->started_mono_ms, "%s", o->ev_reason);
        for (int i = 0; i < o->n_touched; i++) {
            ctrl_node *cn = ctrl_find_node(o->touched[i]);
            if (cn) /* the exact split is not known here: count each as a start (a longer
                     * deadline is the safe side) */
                rsched_add_work(&cn->rs, (int)(o->changed < 100 ? o->changed : 100), 0, ctl.now);
        }
        ctl.want_monitors = true; /* our set no longer matches the table */
        ctl.need_converge = true;
        ctl.converge_epoch = ctl.now;
    }
    ctrl_reply_count(reply, o->v.status, o->v.error, o->v.detail, (int64_t)o->changed);
    reply_put(reply);
}

static void handle(kg_msg *m)
{
    switch (m->kind) {
    case MSG_PROBE_RESULT:
        ctrl_on_probe(m);
        break;
    case MSG_TRIGGER_HEALTH_CHECK:
        prober_trigger_all();
        ctrl_emit(EV_OPERATOR, NULL, "", "", 0, 0, "%s triggered a health check of every node",
             m->actor[0] ? m->actor : "operator");
        ctrl_reply(m->reply, 202, "", "probing every node now");
        break;
    case MSG_UPDATE_LOADS:
        if (ctl.n_load_waiters == LOAD_WAITERS_MAX) {
            ctrl_reply(m->reply, 503, "busy", "too many monitor reads asked for at once");
            break;
        }
        if (m->reply) {
            pthread_mutex_lock(&m->reply->lock);
            m->reply->refs++;
            pthread_mutex_unlock(&m->reply->lock);
            ctl.load_waiters[ctl.n_load_waiters++] = m->reply;
        }
        ctl.want_monitors = true;
        break;
    case MSG_TRIGGER_REBALANCE:
        ctrl_reb_request(EV_REBALANCE, m->actor, m->reply);
        break;
    case MSG_FORCE_REBALANCE_ALL:
        ctrl_reb_request(EV_FORCE_REBALANCE, m->actor, m->reply);
        break;
    case MSG_CANCEL_REBALANCE:
        if (!ctl.reb.running) {
            ctrl_reply(m->reply, 409, "not_running", "no rebalance is running");
            break;
        }
        ctrl_reb_finish("cancelled", "cancelled by the operator");
        ctrl_reply(m->reply, 200, "", "rebalance cancelled");
        break;
    case MSG_NODE_DRAIN:
        on_node_action(m, NODE_DRAINING);
        break;
    case MSG_NODE_MAINTENANCE:
        on_node_action(m, NODE_MAINTENANCE);
        break;
    case MSG_NODE_ENABLE:
        on_node_action(m, NODE_ONLINE);
        break;
    case MSG_PANIC_OVERRIDE:
        on_panic_override(m);
        break;
    case MSG_MONITOR_OP:
        on_monitor_op(m);
        break;
    case MSG_SETUP_CHANGED: /* setup_watch.c: publish (setup_watch_fill) and record it */
        ctl.dirty = true;
        if (m->text[0])
            ctrl_emit(EV_SETUP, m->node, "", "", 0, 0, "%s", m->text);
        break;
    case MSG_NGINX_OUTCOME:
        if (m->flag)
            ctrl_emit(EV_NGINX_RELOAD, NULL, "", "", 0, (int64_t)m->value,
                 "nginx reloaded with the new upstream");
        else
            ctrl_emit(EV_NGINX_FAILED, NULL, "", "", 0, (int64_t)m->value,
                 "nginx validation/reload failed, kept the last good file: %.150s", m->text);
        break;
    case MSG_DB_DONE: {
        db_job *j = m->data;
        apply_kind applying = ctl.applying;
        ctrl_on_db_done(j);
        if (applying == APPLY_REBALANCE)
            ctrl_reb_batch_done(j);
        else if (applying == APPLY_MONITOR_OP)
            monitor_op_done(j);
        break;
    }
    case MSG_RECONCILE_DONE:
        ctrl_on_reconcile_done(m);
        break;
    case MSG_SHUTDOWN:
        ctrl_reply(m->reply, 200, "", "stopping");
        break;
    }
}

/* ==========================================================================================
 * The loop
 * ========================================================================================== */

/* glibc keeps freed memory in its arenas: after a re-read of a million monitors (the old set,
 * the new one and its growth steps, about 24 MB each) or a burst of reconcile calls, RSS stayed
 * at its peak for good.  malloc_trim hands whole free pages back (a few milliseconds for a
 * hundred megabytes of heap); it runs soon after a re-read and otherwise once a minute. */
static void trim_memory(void)
{
    if (ctl.now < ctl.next_trim_ms)
        return;
    ctl.next_trim_ms = ctl.now + 60 * 1000;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* One pass over the timers and decisions after the inbox was emptied. */
static int64_t step(void)
{
    ctrl_refresh_clocks();
    ctrl_check_history();
    ctrl_db_watchdog();
    ctrl_check_lease_expiry();
    if (ctl.now >= ctl.next_refresh_ms) {
        ctl.next_refresh_ms = ctl.now + ctl.cfg->refresh_interval_ms;
        ctl.want_nodes = ctl.want_monitors = true;
    }
    ctrl_update_panic(); /* after the burst of probe results, before any move */
    submit_monitor_op(); /* an operator asked: before the next plan */
    if (ctrl_moves_allowed() && !ctrl_proving())
        ctrl_converge();
    if (ctl.reb.running)
        ctrl_reb_step();
    else
        ctrl_maybe_auto_rebalance();
    ctrl_maybe_submit();
    int64_t due = ctl.now + 1000;
    due = ctrl_min_due(due, ctl.next_refresh_ms);
    due = ctrl_min_due(due, ctl.cfg->db_host ? ctl.next_lease_ms : 0);
    due = ctrl_min_due(due, ctl.next_converge_ms);
    due = ctrl_min_due(due, ctl.db_busy ? ctl.db_job_started + ctl.cfg->db_timeout_ms + 260 : 0);
    due = ctrl_min_due(due, !ctl.db_busy && ctl.db_next_try_ms > ctl.now ? ctl.db_next_try_ms : 0);
    due = ctrl_min_due(due, ctl.leader && ctl.cfg->db_host ? ctl.lease.valid_until_ms : 0);
    due = ctrl_min_due(due, panic_next_due(&ctl.panic, &ctl.pcfg, ctl.now));
    if (ctl.reb.running)
        due = ctrl_min_due(due, ctl.reb.next_batch_ms);
    due = ctrl_min_due(due, ctrl_schedule_calls());
    if (ctl.dirty || (ctl.probe_dirty && ctl.now - ctl.last_publish_ms >= PUBLISH_GAP_MS))
        ctrl_publish();
    else if (ctl.probe_dirty)
        due = ctrl_min_due(due, ctl.last_publish_ms + PUBLISH_GAP_MS);
    trim_memory(); /* after the publish: the snapshot it replaced may have been the last user */
    due = ctrl_min_due(due, ctl.next_trim_ms);
    return due;
}

/* Waits (bounded) for the running database job and handles its result. */
static void wait_db_idle(int64_t deadline)
{
    while (ctl.db_busy && kg_mono_ms() < deadline) {
        kg_msg *m = mailbox_wait(100);
        ctrl_refresh_clocks();
        if (m && m->kind == MSG_DB_DONE)
            ctrl_on_db_done(m->data);
        else if (m && m->reply)
            ctrl_reply(m->reply, 503, "shutting_down", "kumaguard is stopping");
        mailbox_free(m);
    }
}

/* A clean stop gives the lease up, so another controller takes over at once instead of after
 * the lease expires. */
static void release_lease_at_exit(void)
{
    if (!ctl.leader || !ctl.cfg->db_host)
        return;
    int64_t deadline = kg_mono_ms() + ctl.cfg->db_timeout_ms + 500;
    wait_db_idle(deadline);
    if (ctl.db_busy || !ctl.leader)
        return;
    db_job *j = db_job_new();
    if (!j)
        return;
    j->generation = ctl.generation;
    j->release_lease = true;
    if (!ctrl_submit_job(j)) {
        db_job_free(j);
        return;
    }
    wait_db_idle(deadline);
    if (!ctl.db_busy)
        ctrl_set_role(false, ctl.generation, "stopping: lease released");
}

static void *controller_main(void *arg)
{
    (void)arg;
    ctrl_refresh_clocks();
    ctl.want_nodes = ctl.want_monitors = true;
    ctl.next_refresh_ms = ctl.now + ctl.cfg->refresh_interval_ms;
    ctl.next_prune_ms = ctl.now;
    ctl.need_converge = true;
    ctl.converge_epoch = ctl.now;
    ctrl_publish();
    bool stop = false;
    int64_t due = ctl.now;
    while (!stop) {
        int64_t wait = due - kg_mono_ms();
        kg_msg *m = mailbox_wait(wait < 0 ? 0 : (int)wait);
        /* take everything already queued before deciding, so a burst of probe results causes
         * one convergence and one snapshot */
        int handled = 0;
        while (m) {
            ctrl_refresh_clocks();
            if (m->kind == MSG_SHUTDOWN)
                stop = true;
            handle(m);
            mailbox_free(m);
            if (stop || ++handled >= 256)
                break;
            m = mailbox_wait(0);
        }
        if (!stop)
            due = step();
    }
    release_lease_at_exit();
    return NULL;
}

static void setup_deciders(const kg_config *cfg)
{
    ctl.pcfg = (panic_cfg){.share = cfg->panic_share,
                         .rise = cfg->rise,
                         .interval_ms = cfg->health_interval_ms,
                         .timeout_ms = cfg->health_timeout_ms,
                         .max_hold_ms = cfg->panic_max_hold_ms,
                         .release_interval_ms = cfg->panic_release_interval_ms};
    panic_init(&ctl.panic);
    rsched_cfg_default(&ctl.rcfg);
    ctl.rcfg.base_ms = cfg->reconcile_base_ms;
    ctl.rcfg.start_ms = cfg->reconcile_start_ms;
    ctl.rcfg.stop_ms = cfg->reconcile_stop_ms;
    ctl.rcfg.timeout_max_ms = cfg->reconcile_timeout_max_ms;
    ctl.rcfg.cron_skew_ms = cfg->kuma_cron_skew_ms;
    ctl.rcfg.budget = cfg->reconcile_budget;
}

int controller_start(const kg_config *cfg, char *err, size_t errlen)
{
    memset(&ctl, 0, sizeof ctl);
    ctl.cfg = cfg;
    ctrl_refresh_clocks();
    ctl.started_ms = ctl.now;
    ctl.started_wall_ms = ctl.wall;
    ctl.rng = (uint32_t)(ctl.now ^ (int64_t)getpid() << 16) | 1;
    ctl.history_ok = true;
    ctl.static_dirty = cfg->n_static_nodes > 0;
    setup_deciders(cfg);
    nametab_init(&ctl.mon.tab);
    if (events_open(cfg->state_dir, err, errlen) != 0)
        return -1;
    ctl.n_recent = events_load_recent(ctl.recent, KG_RECENT_EVENTS);
    kg_nginx_feed *feed = nginx_feed_new(cfg, err, errlen);
    if (!feed || nginx_worker_start(feed, err, errlen) != 0)
        goto fail_events;
    if (db_worker_start(cfg, err, errlen) != 0)
        goto fail_nginx;
    if (reconcile_worker_start(cfg, err, errlen) != 0)
        goto fail_db;
    for (int i = 0; i < cfg->n_static_nodes; i++)
        ctrl_add_node(cfg->static_nodes[i].id, cfg->static_nodes[i].id, cfg->static_nodes[i].host,
                 NODE_ONLINE);
    if (pthread_create(&ctl.thread, NULL, controller_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the controller thread: %s", strerror(errno));
        reconcile_worker_stop();
        goto fail_db;
    }
    ctl.started = true;
    return 0;
fail_db:
    db_worker_stop();
fail_nginx:
    nginx_worker_stop();
fail_events:
    events_close();
    free(ctl.nodes);
    ctl.nodes = NULL;
    nametab_free(&ctl.mon.tab);
    return -1;
}

void controller_stop(void)
{
    if (!ctl.started)
        return;
    kg_msg m = {.kind = MSG_SHUTDOWN};
    mailbox_post(&m);
    pthread_join(ctl.thread, NULL);
    ctl.stopped = true; /* nothing is published any more: answers below go out as they are */
    /* the appliers next: what they still post meets a closed mailbox */
    mailbox_shutdown();
    reconcile_worker_stop();
    db_worker_stop();
    nginx_worker_stop();
    mailbox_drain();
    ctrl_finish_load_waiters(503, "shutting_down", "kumaguard is stopping");
    for (int i = 0; i < ctl.n_monitor_ops; i++) {
        ctrl_reply(ctl.monitor_ops[i].reply, 503, "shutting_down", "kumaguard is stopping");
        reply_put(ctl.monitor_ops[i].reply);
        free(ctl.monitor_ops[i].req);
    }
    if (ctl.monitor_op_reply) {
        ctrl_reply(ctl.monitor_op_reply, 503, "shutting_down", "kumaguard is stopping");
        reply_put(ctl.monitor_op_reply);
    }
    if (ctl.reb_req.pending) {
        ctrl_reply(ctl.reb_req.reply, 503, "shutting_down", "kumaguard is stopping");
        reply_put(ctl.reb_req.reply);
    }
    ctrl_reb_clear();
    free(ctl.nodes);
    free(ctl.db_events);
    store_free_monitors(&ctl.mon.rows);
    nametab_free(&ctl.mon.tab);
    ctrl_publish_free();
    events_close();
    memset(&ctl, 0, sizeof ctl);
}
