/* ctrl_db.c — the controller's side of the database: leadership (lease.c decides), the jobs it
 * hands to the database applier (db_worker.h) and what their results change.  Part of the
 * controller thread (controller_int.h).
 *
 * Must not: touch a store itself (only db_worker does), or wait for a job. */
#include "controller_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==========================================================================================
 * Leadership
 * ========================================================================================== */

void ctrl_set_role(bool leader, int64_t generation, const char *why)
{
    if (leader != ctl.leader || (leader && generation != ctl.generation)) {
        ctrl_emit(EV_LEADER, NULL, ctl.leader ? "leader" : "follower", leader ? "leader" : "follower",
             0, 0, "%s is %s (generation %lld): %s", ctl.cfg->instance_id,
             leader ? "the leader" : "a follower", (long long)generation, why);
        if (leader) {
            ctl.need_converge = true;
            ctl.converge_epoch = ctl.now;
        } else if (ctl.reb.running) {
            /* finished below, by reb_step */
        }
    }
    ctl.leader = leader;
    ctl.generation = generation;
    ctl.dirty = true;
}

/* What lease_decide() (lease.h) said, as a role.  A grant counts from when the job that asked
 * for it started (no later than the database ran it); without a newer one in time this
 * controller stops leading on its own clock, before the lease can expire in the database. */
static void lease_answered(lease_answer answer, int64_t generation, int64_t sent,
                           const char *err)
{
    lease_timing t = {ctl.cfg->lease_ttl_ms, lease_margin_ms(ctl.cfg->lease_ttl_ms)};
    ctl.lease.leader = ctl.leader; /* a fenced write may have stepped down since */
    ctl.lease.generation = ctl.generation ? ctl.generation : ctl.lease.generation;
    switch (lease_decide(&ctl.lease, &t, answer, generation, sent, ctl.now)) {
    case LEASE_BECAME_LEADER:
        ctrl_set_role(true, ctl.lease.generation, "lease held");
        break;
    case LEASE_STEP_DOWN_LOST:
        ctrl_set_role(false, ctl.lease.generation,
                 answer == LEASE_LOST ? err : "another controller holds the lease");
        break;
    case LEASE_STEP_DOWN_EXPIRED:
        ctrl_set_role(false, ctl.generation, "lease not renewed in time: stepped down before it "
                                      "could expire elsewhere");
        break;
    case LEASE_KEEP:
        break;
    }
}

void ctrl_check_lease_expiry(void)
{
    if (ctl.leader && ctl.cfg->db_host)
        lease_answered(LEASE_NO_ANSWER, 0, 0, "");
}

/* ==========================================================================================
 * Database: building jobs, reading their results
 * ========================================================================================== */

static void db_down(const char *what, const char *err)
{
    ctl.db_errors_total++;
    snprintf(ctl.db_error, sizeof ctl.db_error, "%s: %s", what, err);
    ctl.db_backoff_ms = policy_db_backoff(ctl.db_backoff_ms, ctl.cfg->db_retry_max_ms, ctrl_next_rand());
    ctl.db_next_try_ms = ctl.now + ctl.db_backoff_ms;
    ctl.dirty = true;
    if (ctl.db_ok || !ctl.db_down_since_wall) {
        ctl.db_ok = false;
        ctl.db_down_since_wall = ctl.wall;
        log_error("database unavailable (%s): %s", what, err);
        ctrl_emit(EV_DB, NULL, "up", "down", 0, 0, "database unavailable during %s: %.120s", what,
             err);
    }
}

static void db_up(void)
{
    ctl.db_backoff_ms = 0;
    ctl.db_last_ok_wall = ctl.wall;
    ctl.db_state = "up";
    if (!ctl.db_ok) {
        ctl.db_ok = true;
        ctl.db_error[0] = 0;
        ctl.db_down_since_wall = 0;
        log_info("database available (%s)", ctl.cfg->db_host ? "mariadb" : "sqlite");
        if (ctl.db_was_ok)
            ctrl_emit(EV_DB, NULL, "down", "up", 0, 0, "database available again (%s)",
                 ctl.cfg->db_host ? "mariadb" : "sqlite");
        ctl.db_was_ok = true;
        ctl.need_converge = true;
        ctl.converge_epoch = ctl.now;
        ctl.dirty = true;
    }
}

/* A job that has not come back within DB_TIMEOUT means the database is not answering: say so
 * now (the client library may retry a read several times before it gives up). */
void ctrl_db_watchdog(void)
{
    if (!ctl.db_busy || ctl.db_silent)
        return;
    int64_t limit = ctl.cfg->db_timeout_ms + 250;
    if (ctl.reb.running || ctl.applying != APPLY_NONE)
        limit += ctl.cfg->db_timeout_ms; /* a large apply may take a while by itself */
    if (ctl.now - ctl.db_job_started < limit)
        return;
    ctl.db_silent = true;
    ctl.db_state = "no_answer";
    char msg[96];
    snprintf(msg, sizeof msg, "no answer for %lld ms", (long long)(ctl.now - ctl.db_job_started));
    db_down("database job", msg);
}

void ctrl_finish_load_waiters(int status, const char *error, const char *detail)
{
    for (int i = 0; i < ctl.n_load_waiters; i++) {
        /* the counts read are published before the answer: a read after it sees them */
        ctrl_reply(ctl.load_waiters[i], status, error, detail);
        reply_put(ctl.load_waiters[i]);
    }
    ctl.n_load_waiters = 0;
}


/* Changes to the monitor table kumaguard did not make (Kuma added, removed, paused or re-pinned
 * monitors; our own moves are already in ctl.mon) are work for the nodes too: their next
 * reconcile starts or stops those monitors, which lengthens it.  Reported to the reconcile
 * scheduler as committed between the two reads, so a cron's worst case counts them. */
static void note_foreign_changes(const store_monitor_set *fresh, const kg_nametab *ftab,
                                 int64_t from_ms, int64_t to_ms)
{
    if (!ctl.mon.loaded || ctl.n_nodes == 0)
        return;
    int *starts = calloc((size_t)ctl.n_nodes, sizeof *starts);
    int *stops = calloc((size_t)ctl.n_nodes, sizeof *stops);
    if (!starts || !stops)
        goto out;
    const plan_monitor *a = ctl.mon.rows.monitors, *b = fresh->monitors;
    size_t na = ctl.mon.rows.n, nb = fresh->n, i = 0, k = 0;
    while (i < na || k < nb) {
        const plan_monitor *old = NULL, *cur = NULL;
        if (k >= nb || (i < na && a[i].id < b[k].id))
            old = &a[i++];
        else if (i >= na || b[k].id < a[i].id)
            cur = &b[k++];
        else {
            old = &a[i++];
            cur = &b[k++];
        }
        const char *was = old && old->active ? nametab_name(&ctl.mon.tab, plan_effective(old))
                                             : NULL;
        const char *now = cur && cur->active ? nametab_name(ftab, plan_effective(cur)) : NULL;
        if ((was == NULL && now == NULL) || (was && now && strcmp(was, now) == 0))
            continue;
        ctrl_node *x = was ? ctrl_find_node(was) : NULL, *y = now ? ctrl_find_node(now) : NULL;
        if (x)
            stops[x - ctl.nodes]++;
        if (y)
            starts[y - ctl.nodes]++;
    }
    for (int n = 0; n < ctl.n_nodes; n++)
        rsched_add_work_between(&ctl.nodes[n].rs, starts[n], stops[n], from_ms, to_ms);
out:
    free(starts);
    free(stops);
}

static void set_monitors(db_job *j)
{
    note_foreign_changes(&j->monitors, &j->monitors_tab, ctl.mon.as_of_ms, j->started_mono_ms);
    store_free_monitors(&ctl.mon.rows);
    nametab_free(&ctl.mon.tab);
    ctl.mon.rows = j->monitors;
    ctl.mon.tab = j->monitors_tab;
    memset(&j->monitors, 0, sizeof j->monitors);
    nametab_init(&j->monitors_tab);
    ctl.mon.loaded = true;
    ctl.mon.version++;
    ctl.mon.as_of_ms = j->started_mono_ms;
    ctl.mon.wall_ms = ctrl_to_wall(j->started_mono_ms);
    ctl.dirty = true;
    /* the old set goes when the snapshots holding it do: trim a little later */
    if (ctl.next_trim_ms > ctl.now + 2000)
        ctl.next_trim_ms = ctl.now + 2000;
}

void ctrl_on_db_done(db_job *j)
{
    ctl.db_busy = false;
    ctl.db_silent = false;
    log_debug("db job %llu done in %lld ms (in the worker %lld ms): rc %d, %zu states, %zu events, "
              "%zu moves, monitors %s", (unsigned long long)j->id,
              (long long)(ctl.now - ctl.db_job_started),
              (long long)(j->finished_mono_ms - j->started_mono_ms), (int)j->rc, j->n_states,
              j->n_events, j->n_moves,
              j->monitors_unchanged ? "unchanged" : j->monitors_done ? "read" : "not asked");
    apply_kind applying = ctl.applying;
    ctl.applying = APPLY_NONE;
    if (j->schema_ready)
        ctl.schema_ready = true;
    if (j->n_events && !j->events_done && ctl.leader)
        ctrl_requeue_db_events(j);
    if (j->lease_done)
        lease_answered(j->lease_leader ? LEASE_GRANTED : LEASE_REFUSED, j->lease_generation,
                       j->started_mono_ms, "");
    else if (j->lease_lost)
        lease_answered(LEASE_LOST, ctl.generation, j->started_mono_ms, j->error);
    if (j->rc == STORE_FENCED) {
        if (ctl.leader) {
            log_warn("fenced during %s: generation %lld is no longer current", j->failed_step,
                     (long long)ctl.generation);
            ctrl_set_role(false, ctl.generation, "fenced: another controller leads");
            ctl.next_lease_ms = ctl.now; /* find out who leads now */
        }
        db_up(); /* the database answered */
    } else if (j->rc == STORE_SCHEMA_MISSING) {
        snprintf(ctl.db_error, sizeof ctl.db_error, "%s", j->error);
        if (ctl.db_state == NULL || strcmp(ctl.db_state, "waiting_schema") != 0)
            log_warn("%s (or start kumaguard with --init-schema)", j->error);
        ctl.db_state = "waiting_schema";
        ctl.db_ok = false;
        ctl.db_next_try_ms = ctl.now + 2000;
        ctl.dirty = true;
    } else if (j->rc != STORE_OK) {
        ctl.db_state = "down";
        db_down(j->failed_step, j->error);
    } else {
        db_up();
    }
    if (j->states_done) {
        for (size_t i = 0; i < j->n_states; i++) {
            ctrl_node *cn = ctrl_find_node(j->states[i].id);
            if (!cn)
                continue;
            snprintf(cn->written, sizeof cn->written, "%s", j->states[i].status);
            if (j->states[i].last_seen_ms)
                cn->seen_written_ms = j->states[i].last_seen_ms;
        }
    }
    if (j->nodes_done)
        ctrl_merge_node_rows(j->nodes, j->n_nodes);
    /* Our moves first: a job that moves and then re-reads (a failover) brings a set that has
     * them, and set_monitors counts every difference from ours as changes Kuma made.  Patched
     * after the read, our own moves counted twice in the targets' worst case: a survivor's
     * call no longer fitted before its cron and a failover waited for crons. */
    if (applying == APPLY_CONVERGE || applying == APPLY_REBALANCE)
        ctrl_applied_moves(j);
    if (j->monitors_done && j->monitors_unchanged) {
        ctl.mon.as_of_ms = j->started_mono_ms; /* the set we have is the table as of now */
        ctl.mon.wall_ms = ctrl_to_wall(j->started_mono_ms);
        ctl.dirty = true;
        ctrl_finish_load_waiters(200, "", "monitor table unchanged");
    } else if (j->monitors_done) {
        set_monitors(j);
        char detail[96];
        snprintf(detail, sizeof detail, "%zu monitors re-read", ctl.mon.rows.n);
        ctrl_finish_load_waiters(200, "", detail);
    } else if (j->load_monitors) {
        ctrl_finish_load_waiters(503, "database_unavailable", ctl.db_error);
    }
    if (applying == APPLY_REBALANCE && !j->moves_done) {
        if (j->rc == STORE_FENCED)
            ctrl_reb_finish("failed", "fenced: another controller leads");
        else /* retry the batch when the database is back */
            ctl.reb.next_batch_ms = ctl.db_next_try_ms > ctl.now ? ctl.db_next_try_ms : ctl.now + 1000;
    }
    if (ctl.reb_req.pending && j->monitors_done)
        ctrl_reb_plan();
    else if (ctl.reb_req.pending && j->load_monitors && j->rc != STORE_OK) {
        ctrl_reply(ctl.reb_req.reply, 503, "database_unavailable", ctl.db_error);
        reply_put(ctl.reb_req.reply);
        memset(&ctl.reb_req, 0, sizeof ctl.reb_req);
    }
}

/* Builds the next job from what is wanted now; NULL when nothing is. */
db_job *ctrl_build_job(plan_move *moves, size_t n_moves, const kg_nametab *tab,
                         const char *what)
{
    db_job *j = db_job_new();
    if (!j)
        return NULL;
    j->generation = ctl.leader ? ctl.generation : 0;
    j->upsert_static = ctl.static_dirty;
    bool lease_due = ctl.cfg->db_host ? ctl.now >= ctl.next_lease_ms : !ctl.leader;
    if (lease_due) {
        j->lease = true;
        ctl.next_lease_ms = ctl.now + ctl.cfg->lease_ttl_ms / 3;
    }
    if (ctl.leader && ctl.db_ok) {
        j->states = ctrl_node_states_to_write(&j->n_states);
        if (ctl.n_db_events) {
            j->events = ctl.db_events;
            j->n_events = ctl.n_db_events;
            ctl.db_events = NULL;
            ctl.n_db_events = ctl.cap_db_events = 0;
        }
        if (ctl.now >= ctl.next_prune_ms) {
            ctl.next_prune_ms = ctl.now + 3600 * 1000;
            j->prune_before_ms = ctl.wall - HISTORY_RETENTION_MS;
            events_prune(j->prune_before_ms);
        }
    }
    if (moves && n_moves) {
        j->moves = moves;
        j->n_moves = n_moves;
        if (nametab_copy(&j->moves_tab, tab) != 0) {
            j->moves = NULL; /* the caller keeps them */
            db_job_free(j);
            return NULL;
        }
        snprintf(j->what, sizeof j->what, "%s", what);
    }
    j->load_nodes = ctl.want_nodes;
    j->load_monitors = ctl.want_monitors || ctl.n_load_waiters > 0;
    j->monitors_cached = ctl.mon.loaded;
    return j;
}

bool ctrl_db_idle(void) { return !ctl.db_busy && ctl.now >= ctl.db_next_try_ms; }

bool ctrl_submit_job(db_job *j)
{
    j->id = ++ctl.db_job_seq;
    if (db_worker_submit(j) != 0)
        return false;
    ctl.db_busy = true;
    ctl.db_job_started = ctl.now;
    ctl.want_nodes = ctl.want_monitors = false;
    ctl.static_dirty = false;
    return true;
}

/* Sends whatever database work is due, when the applier is free. */
void ctrl_maybe_submit(void)
{
    if (!ctrl_db_idle())
        return;
    bool lease_due = ctl.cfg->db_host ? ctl.now >= ctl.next_lease_ms : !ctl.leader;
    bool something = lease_due || ctl.want_nodes || ctl.want_monitors || ctl.n_load_waiters ||
                     ctl.static_dirty || (ctl.leader && ctl.db_ok && ctl.n_db_events) ||
                     ctl.now >= ctl.next_ping_ms || !ctl.db_ok;
    if (!something && ctl.leader && ctl.db_ok) {
        size_t n;
        store_node_state *st = ctrl_node_states_to_write(&n);
        something = n > 0;
        free(st);
    }
    if (!something)
        return;
    db_job *j = ctrl_build_job(NULL, 0, NULL, "");
    if (!j)
        return;
    ctl.next_ping_ms = ctl.now + DB_PING_INTERVAL_MS;
    if (!ctrl_submit_job(j)) {
        /* give back what the job took */
        for (size_t i = 0; i < j->n_events; i++)
            ctrl_queue_db_event(&j->events[i]);
        db_job_free(j);
    }
}
