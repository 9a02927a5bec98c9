/* controller.c — the controller thread: the single owner of mutable cluster state.
 *
 * One loop, one thread.  It waits on the mailbox with a timeout computed from its timers, then:
 *   1. applies what arrived (probe results through health.c, operator actions);
 *   2. runs due timers (node/monitor refresh, leader lease, pending reverts, rebalance batches,
 *      coalesced nginx reloads, database reconnects);
 *   3. converges when something changed: plan (assign.c) -> apply (store) -> nudge nodes
 *      (reconcile.c) -> record events;
 *   4. publishes a fresh snapshot if anything visible changed, and feeds nginx from it.
 * Deciding lives in health.c and assign.c; this file only sequences I/O around them.
 *
 * Must not: be called from other threads (they use mailbox.h / snapshot.h), block on HTTP
 * clients, or probe nodes itself. */
#include "controller.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assign.h"
#include "events.h"
#include "health.h"
#include "hostcheck.h"
#include "log.h"
#include "mailbox.h"
#include "nametab.h"
#include "nginx_feed.h"
#include "nginx_worker.h"
#include "probe.h"
#include "reconcile.h"
#include "snapshot.h"
#include "store.h"

/* ------------------------------------------------------------------------------------------
 * State owned by the controller thread
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    kg_node_view v;          /* what is published (state mirrors h.state) */
    node_health h;
    int64_t fail_start_ms;   /* start of the current failure streak, 0 = not failing */
    bool in_db;              /* row seen in the node table */
    bool synced;             /* persisted node.status applied once (static nodes start early) */
    bool status_dirty;       /* node.status must be written */
    bool last_seen_dirty;
    bool needs_nudge;        /* a reconcile call to this node failed: retry */
    int nudge_failures;      /* consecutive failed nudges (retries stop after a few) */
} ctrl_node;

typedef struct {
    bool running;
    kg_event_kind kind;      /* EV_REBALANCE or EV_FORCE_REBALANCE */
    plan_move *moves;
    size_t n, done, applied, skipped;
    int64_t started_ms, next_batch_ms;
    char actor[64];
} rebalance_op;

static struct {
    const kg_config *cfg;
    pthread_t thread;
    bool started;
    int64_t started_ms;

    kg_store *store;
    bool schema_ready;
    bool static_upserted;    /* KUMAGUARD_NODES written to the node table */
    int db_backoff_ms;       /* reconnect back-off, doubles up to 30 s */
    bool db_ok;
    bool db_was_ok;          /* connected at least once (no "back up" event on first connect) */
    char db_error[256];
    int64_t db_errors_total;
    int64_t next_db_retry_ms;

    ctrl_node *nodes;        /* sorted by id */
    int n_nodes;

    kg_nametab names;        /* node ids referenced by monitors (and nodes) */
    store_monitor_set mon;   /* last loaded monitors */
    bool mon_loaded;
    int64_t mon_loaded_ms;

    bool leader;
    int64_t generation;
    int64_t next_lease_ms;

    bool panic;
    char panic_reason[192];
    int64_t panic_settle_until_ms; /* after a panic: let recovering nodes finish rising */

    bool need_converge;
    int64_t next_converge_ms;  /* periodic convergence: retries no-target, adoption, reverts */
    int64_t next_refresh_ms;
    int64_t next_revert_ms;    /* earliest next revert batch */
    int64_t next_auto_rebalance_ms;
    int64_t confirm_since_ms;  /* a node just left online: every node re-probed since then? */
    int64_t last_lease_ok_ms;
    int64_t next_prune_ms;

    rebalance_op reb;
    kg_rebalance_view reb_view;


    kg_event recent[KG_RECENT_EVENTS];
    int n_recent;

    int64_t failovers_total, reverts_total, rebalances_total, adoptions_total;
    int64_t moved_total, reconcile_calls, reconcile_failures;
    int64_t lat_buckets[11];
    double lat_sum;
    int64_t lat_count;

    bool dirty;              /* something visible changed: publish */
    int64_t last_wall_ms, last_mono_ms; /* clock-step detection */
} C;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The controller keeps its timers in wall-clock milliseconds, because the same values are
 * shown and stored.  A step of the wall clock (NTP at boot, a VM restored from a snapshot)
 * would then stall every timer or fire them all; this moves every deadline and "since" by
 * the step, measured against the monotonic clock, so durations stay true. */
static void compensate_clock_step(int64_t now)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t mono = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t step = C.last_mono_ms ? now - (C.last_wall_ms + (mono - C.last_mono_ms)) : 0;
    C.last_wall_ms = now;
    C.last_mono_ms = mono;
    if (step > -2000 && step < 2000)
        return;
    log_warn("wall clock stepped by %lld ms: shifting timers", (long long)step);
    int64_t *timers[] = {&C.next_refresh_ms, &C.next_lease_ms, &C.next_converge_ms,
                         &C.next_revert_ms, &C.next_db_retry_ms, &C.reb.next_batch_ms,
                         &C.next_auto_rebalance_ms, &C.confirm_since_ms,
                         &C.panic_settle_until_ms, &C.last_lease_ok_ms, &C.next_prune_ms,
                         &C.reb.started_ms};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        if (*timers[i])
            *timers[i] += step;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        cn->h.state_since_ms += step;
        if (cn->fail_start_ms)
            cn->fail_start_ms += step;
    }
}

/* ------------------------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------------------------ */

static void db_failed(const char *what, const char *err);
static void fenced(const char *what);

static void emit(kg_event_kind kind, const char *node, const char *from, const char *to,
                 int count, int64_t duration_ms, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void emit(kg_event_kind kind, const char *node, const char *from, const char *to,
                 int count, int64_t duration_ms, const char *fmt, ...)
{
    kg_event ev = {.ts_ms = now_ms(), .kind = kind, .count = count, .duration_ms = duration_ms};
    snprintf(ev.node, sizeof ev.node, "%s", node ? node : "");
    snprintf(ev.from, sizeof ev.from, "%s", from ? from : "");
    snprintf(ev.to, sizeof ev.to, "%s", to ? to : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev.reason, sizeof ev.reason, fmt, ap);
    va_end(ap);
    if (events_append(&ev) != 0)
        log_warn("could not write event %lld to the local history", (long long)ev.id);
    if (C.store && C.db_ok && C.leader) { /* followers keep history locally only */
        char err[256];
        int rc = C.store->ops->append_event(C.store, &ev, err, sizeof err);
        if (rc == STORE_FENCED)
            fenced("append event");
        else if (rc != STORE_OK)
            db_failed("append event", err);
    }
    if (C.n_recent == KG_RECENT_EVENTS) {
        memmove(C.recent, C.recent + 1, sizeof C.recent[0] * (KG_RECENT_EVENTS - 1));
        C.n_recent--;
    }
    C.recent[C.n_recent++] = ev;
    log_info("event %s node=%s from=%s to=%s count=%d duration=%lldms: %s",
             event_kind_name(kind), ev.node, ev.from, ev.to, count, (long long)duration_ms,
             ev.reason);
    C.dirty = true;
}

/* ------------------------------------------------------------------------------------------
 * Database state
 * ------------------------------------------------------------------------------------------ */

static void db_failed(const char *what, const char *err)
{
    C.db_errors_total++;
    snprintf(C.db_error, sizeof C.db_error, "%s: %s", what, err);
    if (C.db_ok) {
        C.db_ok = false;
        log_error("database unavailable (%s): %s", what, err);
        emit(EV_DB, NULL, "up", "down", 0, 0, "database unavailable during %s: %.120s", what,
             err);
    }
    /* back off (1 s doubling to 30 s): each reconnect may block for DB_TIMEOUT */
    C.db_backoff_ms = C.db_backoff_ms ? C.db_backoff_ms * 2 : 1000;
    if (C.db_backoff_ms > 30000)
        C.db_backoff_ms = 30000;
    C.next_db_retry_ms = now_ms() + C.db_backoff_ms;
    C.dirty = true;
}

static void db_recovered(void)
{
    C.db_backoff_ms = 0;
    if (!C.db_ok) {
        C.db_ok = true;
        C.db_error[0] = 0;
        log_info("database available (%s)", C.store->ops->backend);
        if (C.db_was_ok)
            emit(EV_DB, NULL, "down", "up", 0, 0, "database available again (%s)",
                 C.store->ops->backend);
        C.db_was_ok = true;
        for (int i = 0; i < C.n_nodes; i++)
            C.nodes[i].status_dirty = true; /* write what we decided while it was away */
        C.need_converge = true;
    }
}

/* Leadership.  Only the leader writes to the cluster database (moves, node.status, events);
 * every write it makes carries its generation, so a leader that lost the lease without
 * noticing cannot clobber the new leader's work (the store aborts with STORE_FENCED). */
static void set_role(bool leader, int64_t generation)
{
    C.leader = leader;
    C.generation = generation;
    if (C.store) {
        C.store->fence_generation = leader ? generation : 0;
        C.store->maintain_overrides = leader;
    }
    C.dirty = true;
}

static void fenced(const char *what)
{
    if (!C.leader)
        return;
    log_warn("fenced during %s: generation %lld is no longer current, another controller "
             "leads", what, (long long)C.generation);
    set_role(false, C.generation);
    C.next_lease_ms = now_ms(); /* find out who leads now */
    emit(EV_LEADER, NULL, "leader", "follower", 0, 0,
         "fenced during %s: generation %lld is no longer current", what,
         (long long)C.generation);
}

/* Opens the store and its schema if needed.  Returns true when the database is usable. */
static bool ensure_db(void)
{
    char err[256];
    int64_t now = now_ms();
    if (C.store && C.schema_ready && C.db_ok)
        return true;
    if (now < C.next_db_retry_ms)
        return false;
    if (!C.store) {
        C.store = store_open(C.cfg, err, sizeof err);
        if (!C.store) {
            db_failed("connect", err);
            return false;
        }
        C.store->fence_generation = C.leader ? C.generation : 0;
        C.store->maintain_overrides = C.leader;
    }
    if (!C.schema_ready) {
        int rc = C.store->ops->ensure_schema(C.store, C.cfg->init_schema, err, sizeof err);
        if (rc == STORE_SCHEMA_MISSING) {
            snprintf(C.db_error, sizeof C.db_error,
                     "waiting for the Kuma nodes to create the node/monitor tables");
            if (C.db_ok || C.db_errors_total == 0)
                log_warn("%s (or start kumaguard with --init-schema)", C.db_error);
            C.db_ok = false;
            C.next_db_retry_ms = now + 2000;
            C.dirty = true;
            return false;
        }
        if (rc != STORE_OK) {
            db_failed("schema", err);
            return false;
        }
        C.schema_ready = true;
    } else if (C.store->ops->ping(C.store, err, sizeof err) != STORE_OK) {
        db_failed("ping", err);
        return false;
    }
    if (!C.static_upserted) {
        for (int i = 0; i < C.cfg->n_static_nodes; i++) {
            const kg_static_node *sn = &C.cfg->static_nodes[i];
            if (C.store->ops->upsert_node(C.store, sn->id, sn->host, err, sizeof err) !=
                STORE_OK) {
                db_failed("register static node", err);
                return false;
            }
        }
        C.static_upserted = true;
    }
    db_recovered();
    return true;
}

/* ------------------------------------------------------------------------------------------
 * Nodes
 * ------------------------------------------------------------------------------------------ */

static int node_cmp(const void *a, const void *b)
{
    return strcmp(((const ctrl_node *)a)->v.id, ((const ctrl_node *)b)->v.id);
}

static ctrl_node *find_node(const char *id)
{
    ctrl_node key;
    if (strlen(id) > KG_NODE_ID_MAX) /* would be truncated into another node's id */
        return NULL;
    snprintf(key.v.id, sizeof key.v.id, "%s", id);
    if (C.n_nodes == 0) /* bsearch must not be handed a NULL array */
        return NULL;
    return bsearch(&key, C.nodes, (size_t)C.n_nodes, sizeof *C.nodes, node_cmp);
}

static ctrl_node *add_node(const char *id, const char *name, const char *host,
                           node_state persisted, int64_t now)
{
    ctrl_node *grown = realloc(C.nodes, (size_t)(C.n_nodes + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    C.nodes = grown;
    ctrl_node *n = &C.nodes[C.n_nodes++];
    memset(n, 0, sizeof *n);
    snprintf(n->v.id, sizeof n->v.id, "%s", id);
    snprintf(n->v.name, sizeof n->v.name, "%s", name && *name ? name : id);
    snprintf(n->v.host, sizeof n->v.host, "%s", host ? host : "");
    n->v.host_valid = hostcheck_valid(n->v.host, NULL, 0) && hostcheck_node_id_valid(id);
    n->v.last_latency_ms = -1;
    health_init(&n->h, persisted, now);
    n->v.state = n->v.prev_state = n->h.state;
    n->v.state_since_ms = now;
    n->v.monitor_limit = C.cfg->monitor_limit;
    qsort(C.nodes, (size_t)C.n_nodes, sizeof *C.nodes, node_cmp);
    C.dirty = true;
    return find_node(id);
}

static bool is_static(const char *id)
{
    for (int i = 0; i < C.cfg->n_static_nodes; i++)
        if (strcmp(C.cfg->static_nodes[i].id, id) == 0)
            return true;
    return false;
}

/* Merges the node table into C.nodes: new rows are added, hosts follow the table, rows that
 * vanished (and are not static) are dropped. */
static void refresh_nodes(int64_t now)
{
    store_node_row *rows = NULL;
    size_t n = 0;
    char err[256];
    if (C.store->ops->load_nodes(C.store, &rows, &n, err, sizeof err) != STORE_OK) {
        db_failed("load nodes", err);
        return;
    }
    for (int i = 0; i < C.n_nodes; i++)
        C.nodes[i].in_db = false;
    for (size_t r = 0; r < n; r++) {
        ctrl_node *cn = find_node(rows[r].id);
        if (!cn) {
            cn = add_node(rows[r].id, rows[r].name, rows[r].host,
                          node_state_parse(rows[r].status), now);
            if (!cn)
                continue;
            cn->synced = true;
            log_info("node %s (%s) discovered, starting %s", cn->v.id, cn->v.host,
                     node_state_name(cn->h.state));
        }
        cn->in_db = true;
        node_state db_state = node_state_parse(rows[r].status);
        if (!cn->synced) {
            /* static nodes were added before the table was read: start them from what was
             * persisted (maintenance, draining, offline survive a restart) */
            cn->synced = true;
            if (cn->v.probes_total == 0) {
                health_init(&cn->h, db_state, now);
                cn->v.state = cn->v.prev_state = cn->h.state;
                cn->v.state_since_ms = now;
            }
        }
        if (!C.leader) {
            /* Operator states are decided by the leader; a follower mirrors them so that its
             * nginx stops routing to a node in maintenance too. */
            bool db_op = db_state == NODE_DRAINING || db_state == NODE_MAINTENANCE;
            bool mine_op = cn->h.state == NODE_DRAINING || cn->h.state == NODE_MAINTENANCE;
            if ((db_op && cn->h.state != db_state) || (!db_op && mine_op)) {
                health_set_operator(&cn->h, db_op ? db_state : NODE_ONLINE, now);
                cn->v.prev_state = cn->v.state;
                cn->v.state = cn->h.state;
                cn->v.state_since_ms = now;
                C.dirty = true;
            }
        }
        cn->v.is_primary = rows[r].is_primary;
        if (rows[r].name[0])
            snprintf(cn->v.name, sizeof cn->v.name, "%s", rows[r].name);
        if (strcmp(cn->v.host, rows[r].host) != 0) {
            if (is_static(cn->v.id)) {
                /* the configuration wins over what a restarting node registered */
                C.static_upserted = false;
            } else {
                snprintf(cn->v.host, sizeof cn->v.host, "%s", rows[r].host);
                C.dirty = true;
            }
        }
        char herr[64] = "";
        bool valid = hostcheck_valid(cn->v.host, herr, sizeof herr) &&
                     hostcheck_node_id_valid(cn->v.id);
        if (!valid && cn->v.host_valid)
            log_warn("node %s has an invalid host value (%s); it is not probed or routed",
                     cn->v.id, herr[0] ? herr : "bad node id");
        cn->v.host_valid = valid;
        /* A Kuma node that restarts writes status='online' over ours: ours is the authority. */
        if (strcmp(rows[r].status, node_state_db_value(cn->h.state)) != 0)
            cn->status_dirty = true;
    }
    free(rows);
    int w = 0;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        cn->v.is_static = is_static(cn->v.id);
        if (!cn->in_db && !cn->v.is_static) {
            log_info("node %s left the node table", cn->v.id);
            C.dirty = true;
            C.need_converge = true;
            continue;
        }
        C.nodes[w++] = *cn;
    }
    C.n_nodes = w;
}

static void write_node_states(void)
{
    if (!C.leader)
        return;
    store_node_state st[256];
    size_t n = 0;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        if (!cn->status_dirty && !cn->last_seen_dirty)
            continue;
        if (n == sizeof st / sizeof st[0])
            break;
        snprintf(st[n].id, sizeof st[n].id, "%s", cn->v.id);
        st[n].status = node_state_db_value(cn->h.state);
        st[n].last_seen_ms = cn->last_seen_dirty ? cn->v.last_seen_ms : 0;
        n++;
    }
    if (n == 0)
        return;
    char err[256];
    int rc = C.store->ops->write_node_states(C.store, st, n, err, sizeof err);
    if (rc == STORE_FENCED) {
        fenced("write node states");
        return;
    }
    if (rc != STORE_OK) {
        db_failed("write node states", err);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        ctrl_node *cn = find_node(st[k].id);
        if (cn)
            cn->status_dirty = cn->last_seen_dirty = false;
    }
}

/* ------------------------------------------------------------------------------------------
 * Monitors and planning
 * ------------------------------------------------------------------------------------------ */

static bool load_monitors(int64_t now)
{
    store_monitor_set fresh = {0};
    char err[256];
    bool changed = true; /* the cheap probe first: an unchanged table is not read again */
    if (C.mon_loaded && C.store->ops->monitors_changed(C.store, &changed, err, sizeof err) ==
                            STORE_OK && !changed) {
        C.mon_loaded_ms = now;
        C.dirty = true;
        return true;
    }
    if (C.store->ops->load_monitors(C.store, &C.names, &fresh, err, sizeof err) != STORE_OK) {
        db_failed("load monitors", err);
        return false;
    }
    store_free_monitors(&C.mon);
    C.mon = fresh;
    C.mon_loaded = true;
    C.mon_loaded_ms = now;
    C.dirty = true;
    return true;
}

/* The planner's view of the nodes, in nametab index space.  Every node we know is interned
 * first, so plan_node[i] matches nametab index i; names only monitors mention are UNKNOWN. */
static plan_node *build_plan_nodes(int64_t now, int *n_out)
{
    for (int i = 0; i < C.n_nodes; i++)
        nametab_intern(&C.names, C.nodes[i].v.id, strlen(C.nodes[i].v.id));
    int n = C.names.n;
    plan_node *pn = calloc((size_t)(n ? n : 1), sizeof *pn);
    if (!pn)
        return NULL;
    bool revert_window = now >= C.next_revert_ms;
    for (int i = 0; i < n; i++) {
        pn[i].id = nametab_name(&C.names, i);
        pn[i].state = NODE_UNKNOWN;
        pn[i].limit = C.cfg->monitor_limit;
        ctrl_node *cn = find_node(pn[i].id);
        if (!cn)
            continue;
        /* an unroutable host cannot run monitors we could reach: treat like unknown */
        pn[i].state = cn->v.host_valid ? cn->h.state : NODE_UNKNOWN;
        pn[i].revert_ok = revert_window && cn->h.state == NODE_ONLINE && cn->v.host_valid &&
                          now - cn->h.state_since_ms >= C.cfg->recovery_hold_down_ms;
    }
    *n_out = n;
    return pn;
}

static int32_t move_from(const plan_move *m)
{
    return m->expect_over >= 0 ? m->expect_over : m->expect_home;
}

static int32_t move_to_effective(const plan_move *m)
{
    switch (m->kind) {
    case MOVE_SET_OVERRIDE: return m->to;
    case MOVE_CLEAR_OVERRIDE: return m->expect_home;
    default: return (m->expect_over >= 0 && !m->clear_override) ? m->expect_over : m->to;
    }
}

/* Asks every routable node whose monitor set changed (or whose last nudge failed) to
 * re-read its assignments now.  `changed[i]` is indexed like C.names. */
static void nudge(const bool *changed, int n_changed)
{
    if (!C.cfg->kuma_api_key)
        return;
    reconcile_target *t = calloc((size_t)(C.n_nodes ? C.n_nodes : 1), sizeof *t);
    if (!t)
        return;
    int n = 0;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        int32_t idx = nametab_find(&C.names, cn->v.id, strlen(cn->v.id));
        bool want = cn->needs_nudge || (changed && idx >= 0 && idx < n_changed && changed[idx]);
        if (!want || !node_state_routable(cn->h.state) || !cn->v.host_valid)
            continue;
        snprintf(t[n].node, sizeof t[n].node, "%s", cn->v.id);
        snprintf(t[n].host, sizeof t[n].host, "%s", cn->v.host);
        n++;
    }
    if (n > 0) {
        reconcile_nudge(t, n, C.cfg->kuma_api_key, C.cfg->reconcile_path, 1000);
        for (int k = 0; k < n; k++) {
            ctrl_node *cn = find_node(t[k].node);
            C.reconcile_calls++;
            if (!t[k].ok) {
                C.reconcile_failures++;
                log_warn("reconcile nudge to %s failed: %s (will retry)", t[k].node,
                         t[k].error);
            }
            if (cn) {
                /* A node re-reads its assignments every minute anyway: after a few failed
                 * retries (wrong key, old node version) stop insisting. */
                cn->nudge_failures = t[k].ok ? 0 : cn->nudge_failures + 1;
                cn->needs_nudge = !t[k].ok && cn->nudge_failures < 4;
            }
        }
        C.dirty = true;
    }
    free(t);
}

/* Nudges the nodes whose monitor set the moves changed: the node each monitor left and the
 * node it now runs on. */
static void nudge_after(const plan_move *moves, size_t n)
{
    bool *changed = calloc((size_t)C.names.n + 1, sizeof *changed);
    if (!changed)
        return;
    for (size_t i = 0; i < n; i++) {
        int32_t a = move_from(&moves[i]), b = move_to_effective(&moves[i]);
        if (a >= 0)
            changed[a] = true;
        if (b >= 0)
            changed[b] = true;
    }
    nudge(changed, C.names.n);
    free(changed);
}

/* Applies moves in one transaction and handles the outcome.  Returns applied count or -1. */
static long apply_moves(const plan_move *moves, size_t n, const char *what)
{
    store_apply_result res = {0};
    char err[256];
    int rc = C.store->ops->apply_moves(C.store, &C.names, moves, n, what, &res, err, sizeof err);
    if (rc == STORE_FENCED) {
        fenced(what);
        return -1;
    }
    if (rc != STORE_OK) {
        db_failed(what, err);
        return -1;
    }
    if (res.skipped)
        log_info("%s: %zu of %zu rows changed meanwhile and were left alone", what, res.skipped,
                 n);
    C.moved_total += (int64_t)res.applied;
    return (long)res.applied;
}

static node_state state_of(int32_t idx)
{
    const char *name = nametab_name(&C.names, idx);
    ctrl_node *cn = name ? find_node(name) : NULL;
    return cn ? cn->h.state : NODE_UNKNOWN;
}

/* Per-source-node summary of a converge plan, for the event log. */
static void emit_plan_events(const plan_result *r, int64_t duration_ms)
{
    int nn = C.names.n;
    int *fo = calloc((size_t)nn + 1, sizeof *fo);
    int *rv = calloc((size_t)nn + 1, sizeof *rv);
    int *first_to = malloc(((size_t)nn + 1) * sizeof *first_to);
    bool *multi = calloc((size_t)nn + 1, sizeof *multi);
    if (!fo || !rv || !first_to || !multi)
        goto out;
    for (int i = 0; i < nn; i++)
        first_to[i] = -1;
    int adopt = 0;
    for (size_t i = 0; i < r->n_moves; i++) {
        const plan_move *m = &r->moves[i];
        int32_t from = move_from(m), to = move_to_effective(m);
        if (!m->expect_active)
            continue; /* our override cleared on a paused monitor: neither failover nor revert */
        if (m->kind == MOVE_SET_HOME && from < 0) {
            adopt++;
        } else if (m->kind == MOVE_CLEAR_OVERRIDE && node_state_placeable(state_of(from))) {
            /* leaving a live node to go home: a revert, not a failover */
            rv[m->expect_home]++;
        } else if (from >= 0) {
            fo[from]++;
            if (first_to[from] < 0)
                first_to[from] = to;
            else if (first_to[from] != to)
                multi[from] = true;
        }
    }
    for (int i = 0; i < nn; i++) {
        const char *name = nametab_name(&C.names, i);
        if (fo[i]) {
            ctrl_node *cn = find_node(name);
            C.failovers_total++;
            const char *to = multi[i] ? "several" : nametab_name(&C.names, first_to[i]);
            emit(EV_FAILOVER, name, name, to, fo[i], duration_ms, "%s is %s%s%s", name,
                 cn ? node_state_name(cn->h.state) : "not in the node table",
                 cn && cn->v.last_failure_reason[0] ? ": " : "",
                 cn ? cn->v.last_failure_reason : "");
        }
        if (rv[i]) {
            C.reverts_total++;
            emit(EV_REVERT, name, "overrides", name, rv[i], duration_ms,
                 "%s stable for the hold-down: its monitors return home%s", name,
                 r->reverts_truncated ? " (batch; more to follow)" : "");
        }
    }
    if (adopt) {
        C.adoptions_total++;
        emit(EV_ADOPTION, NULL, "", "", adopt, duration_ms,
             "%d active monitors had no node and were given a home", adopt);
    }
out:
    free(fo);
    free(rv);
    free(first_to);
    free(multi);
}

/* A node just stopped being online.  Before moving its monitors, every other node gets one
 * fresh probe (triggered at that moment): if they are failing too, the panic guard engages
 * first.  Without this, nodes whose probe phases drifted apart would be failed over one by
 * one during a total outage.  In the common case (one dead node, healthy peers) the peers
 * answer within milliseconds, so failover is not delayed. */
static bool confirm_pending(int64_t now)
{
    if (!C.confirm_since_ms)
        return false;
    if (now >= C.confirm_since_ms + C.cfg->health_timeout_ms + 250) {
        C.confirm_since_ms = 0; /* some probe hangs: its timeout has passed, go on */
        return false;
    }
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        if (health_probed(&cn->h) && cn->v.host_valid &&
            cn->v.last_probe_ms < C.confirm_since_ms)
            return true;
    }
    C.confirm_since_ms = 0;
    return false;
}

static void converge(int64_t now)
{
    if (confirm_pending(now)) {
        C.need_converge = true; /* runs again as the confirming probe results arrive */
        return;
    }
    C.need_converge = false;
    C.next_converge_ms = now + C.cfg->refresh_interval_ms;
    if (now < C.panic_settle_until_ms) {
        C.next_converge_ms = C.panic_settle_until_ms;
        return;
    }
    /* wake up when a recovered node's hold-down ends, not a refresh interval later */
    for (int i = 0; i < C.n_nodes; i++) {
        int64_t end = C.nodes[i].h.state_since_ms + C.cfg->recovery_hold_down_ms;
        if (C.nodes[i].h.state == NODE_ONLINE && end > now && end < C.next_converge_ms)
            C.next_converge_ms = end;
    }
    if (!C.leader || C.panic || !ensure_db())
        return;
    int64_t t0 = now_ms();
    if (!load_monitors(now))
        return;
    int n_nodes = 0;
    plan_node *pn = build_plan_nodes(now, &n_nodes);
    if (!pn)
        return;
    plan_view v = {.nodes = pn, .n_nodes = n_nodes, .monitors = C.mon.monitors,
                   .n_monitors = C.mon.n};
    plan_options o;
    plan_options_default(&o);
    o.revert_batch = C.cfg->revert_batch_size;
    o.tolerance = C.cfg->balance_tolerance;
    plan_result r;
    plan_result_init(&r);
    if (plan_converge(&v, &o, &r) != 0) {
        log_error("planner out of memory");
        goto out;
    }
    if (r.n_no_target && !C.panic)
        log_warn("%d monitors need a node but none is online; will retry", r.n_no_target);
    if (r.n_moves == 0)
        goto out;
    int64_t t_planned = now_ms();
    long applied = apply_moves(r.moves, r.n_moves, "converge");
    if (applied < 0)
        goto out;
    int64_t t_applied = now_ms();
    nudge_after(r.moves, r.n_moves);
    int64_t dur = now_ms() - t0;
    log_debug("converge timing: load+plan %lld ms, apply %lld ms, nudge %lld ms",
              (long long)(t_planned - t0), (long long)(t_applied - t_planned),
              (long long)(t0 + dur - t_applied));
    emit_plan_events(&r, dur);
    if (r.n_over_capacity)
        emit(EV_CAPACITY_WARNING, NULL, "", "", r.n_over_capacity, 0,
             "%d monitors placed on nodes already at MONITOR_LIMIT_PER_NODE=%d: running over "
             "the limit beats not running", r.n_over_capacity, C.cfg->monitor_limit);
    if (r.n_revert) {
        C.next_revert_ms = now + C.cfg->revert_batch_interval_ms;
        if (r.reverts_truncated)
            C.next_converge_ms = C.next_revert_ms;
    }
    log_info("converge: %zu moves planned, %ld applied in %lld ms (failover %d, revert %d, "
             "adopt %d)", r.n_moves, applied, (long long)dur, r.n_failover, r.n_revert,
             r.n_adopt);
    load_monitors(now_ms());
out:
    plan_result_free(&r);
    free(pn);
}

/* ------------------------------------------------------------------------------------------
 * Rebalancing (batched, cancellable)
 * ------------------------------------------------------------------------------------------ */

static void reb_finish(const char *phase, const char *error)
{
    int64_t now = now_ms();
    snprintf(C.reb_view.phase, sizeof C.reb_view.phase, "%s", phase);
    C.reb_view.running = false;
    C.reb_view.finished_ms = now;
    C.reb_view.moved = (int)C.reb.applied;
    snprintf(C.reb_view.last_error, sizeof C.reb_view.last_error, "%s", error ? error : "");
    C.rebalances_total++;
    emit(C.reb.kind, NULL, "", "", (int)C.reb.applied, now - C.reb.started_ms,
         "%s %s by %s: %zu of %zu home changes applied, %zu skipped (changed meanwhile)%s%s",
         C.reb.kind == EV_FORCE_REBALANCE ? "force rebalance" : "rebalance", phase, C.reb.actor,
         C.reb.applied, C.reb.n, C.reb.skipped, error ? ": " : "", error ? error : "");
    free(C.reb.moves);
    memset(&C.reb, 0, sizeof C.reb);
    C.dirty = true;
    load_monitors(now);
}

static void reb_step(int64_t now)
{
    if (!C.reb.running || now < C.reb.next_batch_ms)
        return;
    if (!C.leader || C.panic) {
        reb_finish("cancelled", C.panic ? "panic guard engaged" : "no longer the leader");
        return;
    }
    if (!ensure_db()) {
        /* retry the batch when the database is back, without spinning meanwhile */
        C.reb.next_batch_ms = C.next_db_retry_ms > now ? C.next_db_retry_ms : now + 1000;
        return;
    }
    size_t batch = (size_t)C.cfg->move_batch_size;
    size_t n = C.reb.n - C.reb.done < batch ? C.reb.n - C.reb.done : batch;
    for (size_t i = C.reb.done; i < C.reb.done + n; i++) {
        if (!node_state_placeable(state_of(C.reb.moves[i].to))) {
            /* the plan is stale: a target left since it was made */
            C.need_converge = true;
            reb_finish("cancelled", "a target node is no longer online; plan again");
            return;
        }
    }
    store_apply_result res = {0};
    char err[256];
    const char *what = C.reb.kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance";
    int rc = C.store->ops->apply_moves(C.store, &C.names, C.reb.moves + C.reb.done, n, what,
                                       &res, err, sizeof err);
    if (rc == STORE_FENCED) {
        fenced(what);
        reb_finish("failed", "fenced: another controller leads");
        return;
    }
    if (rc != STORE_OK) {
        db_failed(what, err);
        C.reb.next_batch_ms = C.next_db_retry_ms > now ? C.next_db_retry_ms : now + 1000;
        return;
    }
    C.reb.done += n;
    C.reb.applied += res.applied;
    C.reb.skipped += res.skipped;
    C.moved_total += (int64_t)res.applied;
    nudge_after(C.reb.moves + C.reb.done - n, n);
    C.reb_view.moved = (int)C.reb.done;
    int64_t elapsed = now_ms() - C.reb.started_ms;
    if (C.reb.done > 0)
        C.reb_view.eta_ms = C.reb.started_ms +
                            (int64_t)((double)elapsed * (double)C.reb.n / (double)C.reb.done);
    C.reb.next_batch_ms = now_ms() + C.cfg->move_batch_interval_ms;
    C.dirty = true;
    if (C.reb.done >= C.reb.n)
        reb_finish("done", NULL);
}

static void reb_start(kg_event_kind kind, const char *actor, kg_reply *reply)
{
    int64_t now = now_ms();
    if (C.reb.running) {
        reply_finish(reply, 409, "busy", "a rebalance is already running; cancel it first");
        return;
    }
    if (!C.leader) {
        reply_finish(reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    if (C.panic) {
        reply_finish(reply, 409, "panic", C.panic_reason);
        return;
    }
    if (!ensure_db() || !load_monitors(now)) {
        reply_finish(reply, 503, "database_unavailable", C.db_error);
        return;
    }
    int n_nodes = 0;
    plan_node *pn = build_plan_nodes(now, &n_nodes);
    plan_view v = {.nodes = pn, .n_nodes = n_nodes, .monitors = C.mon.monitors,
                   .n_monitors = C.mon.n};
    plan_options o;
    plan_options_default(&o);
    o.tolerance = C.cfg->balance_tolerance;
    plan_result r;
    plan_result_init(&r);
    int rc = pn ? (kind == EV_FORCE_REBALANCE ? plan_force_all(&v, &o, &r)
                                              : plan_rebalance(&v, &o, &r))
                : -1;
    free(pn);
    if (rc != 0) {
        plan_result_free(&r);
        reply_finish(reply, 500, "planner_failed", "out of memory");
        return;
    }
    snprintf(C.reb_view.operation, sizeof C.reb_view.operation, "%s",
             kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance");
    C.reb_view.started_ms = now;
    C.reb_view.total = (int)r.n_moves;
    C.reb_view.moved = 0;
    C.reb_view.eta_ms = 0;
    C.reb_view.finished_ms = 0;
    C.reb_view.last_error[0] = 0;
    char detail[200];
    snprintf(detail, sizeof detail, "%zu home changes planned", r.n_moves);
    C.reb = (rebalance_op){.running = true, .kind = kind, .moves = r.moves, .n = r.n_moves,
                           .started_ms = now, .next_batch_ms = now};
    snprintf(C.reb.actor, sizeof C.reb.actor, "%s", actor[0] ? actor : "api");
    r.moves = NULL; /* ownership moved to the operation */
    plan_result_free(&r);
    if (C.reb.n == 0 && !reply) {
        /* automatic attempt that cannot improve anything (pins, limits): no event, and wait
         * longer before the next attempt */
        free(C.reb.moves);
        memset(&C.reb, 0, sizeof C.reb);
        C.next_auto_rebalance_ms = now + 10 * 60000;
        return;
    }
    if (C.reb.n == 0) {
        snprintf(C.reb_view.phase, sizeof C.reb_view.phase, "done");
        reb_finish("done", NULL);
        reply_finish(reply, 200, "", "already balanced: nothing to move");
        return;
    }
    C.reb_view.running = true;
    snprintf(C.reb_view.phase, sizeof C.reb_view.phase, "applying");
    C.dirty = true;
    reply_finish(reply, 202, "", detail);
}

/* Automatic rebalance (REBALANCE_AUTO_SPREAD > 0): when the effective load of the placeable
 * nodes spreads wider than the threshold ((max - min) / mean), start the same minimal-movement
 * rebalance an operator would.  Off by default: a rebalance changes monitors' homes, and each
 * move restarts a check, so an operator opts in.  At most one attempt per minute, and never
 * while a failover is unsettled (a node not online or a panic). */
static void maybe_auto_rebalance(int64_t now)
{
    if (C.cfg->auto_rebalance_spread <= 0 || now < C.next_auto_rebalance_ms || C.reb.running ||
        !C.leader || C.panic || !C.db_ok || !C.mon_loaded)
        return;
    C.next_auto_rebalance_ms = now + 60000;
    int nn = C.names.n, placeable = 0;
    int *load = calloc((size_t)nn + 1, sizeof *load);
    if (!load)
        return;
    plan_view v = {.n_nodes = nn, .monitors = C.mon.monitors, .n_monitors = C.mon.n};
    plan_count_load(&v, load);
    int lo = -1, hi = -1;
    long total = 0;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        if (cn->h.state != NODE_ONLINE) {
            if (cn->h.state != NODE_MAINTENANCE && cn->h.state != NODE_DRAINING)
                goto out; /* a failover or recovery is in flight: let it settle */
            continue;
        }
        int32_t idx = nametab_find(&C.names, cn->v.id, strlen(cn->v.id));
        int l = idx >= 0 ? load[idx] : 0;
        lo = lo < 0 || l < lo ? l : lo;
        hi = l > hi ? l : hi;
        total += l;
        placeable++;
    }
    if (placeable < 2 || total == 0)
        goto out;
    double mean = (double)total / placeable;
    double spread = (double)(hi - lo) / mean;
    if (spread > C.cfg->auto_rebalance_spread) {
        log_info("load spread %.2f exceeds REBALANCE_AUTO_SPREAD=%.2f: rebalancing", spread,
                 C.cfg->auto_rebalance_spread);
        reb_start(EV_REBALANCE, "auto (load spread)", NULL);
    }
out:
    free(load);
}

/* ------------------------------------------------------------------------------------------
 * Health
 * ------------------------------------------------------------------------------------------ */

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
        C.lat_buckets[b]++;
        C.lat_sum += r->latency_ms;
        C.lat_count++;
    }
}

/* Panic guard (SPEC section 2): every probed node failing, or more than panic_share of them
 * (and at least two) having started to fail within one detection window of each other, means
 * the fault is more likely ours (network, resolver) than theirs: move nothing, freeze nginx. */
static void update_panic(int64_t now)
{
    int total = 0, failing = 0, recent = 0;
    int64_t window = (int64_t)C.cfg->fall * C.cfg->health_interval_ms + C.cfg->health_timeout_ms;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        if (!health_probed(&cn->h) || !cn->v.host_valid)
            continue;
        total++;
        if (cn->h.consecutive_failures > 0 || cn->h.state == NODE_OFFLINE) {
            failing++;
            if (cn->fail_start_ms && now - cn->fail_start_ms <= window)
                recent++;
        }
    }
    bool all = total > 0 && failing == total;
    bool many = recent >= 2 && (double)recent > C.cfg->panic_share * (double)total;
    bool panic = all || many;
    if (panic == C.panic)
        return;
    C.panic = panic;
    C.dirty = true;
    if (panic) {
        snprintf(C.panic_reason, sizeof C.panic_reason,
                 all ? "all %d probed nodes are failing (%d of %d): more likely a network or "
                       "controller fault; no monitors are moved and nginx keeps its upstream"
                     : "%d nodes started failing at once (%d of %d): more likely a network or "
                       "controller fault; no monitors are moved and nginx keeps its upstream",
                 all ? total : recent, failing, total);
        log_error("PANIC GUARD: %s", C.panic_reason);
        emit(EV_PANIC, NULL, "normal", "panic", failing, 0, "%s", C.panic_reason);
    } else {
        log_warn("panic guard released: %d of %d nodes failing", failing, total);
        emit(EV_PANIC, NULL, "panic", "normal", failing, 0,
             "panic guard released: %d of %d nodes failing", failing, total);
        C.panic_reason[0] = 0;
        /* Nodes come back from a shared outage one probe at a time.  Moving the monitors of
         * the ones still rising would only send them back after the hold-down: give every
         * node the time to pass `rise` probes first. */
        C.panic_settle_until_ms = now + (int64_t)(C.cfg->rise + 1) * C.cfg->health_interval_ms +
                                  C.cfg->health_timeout_ms;
        C.next_converge_ms = C.panic_settle_until_ms;
    }
}

static void on_probe(const kg_msg *m, int64_t now)
{
    ctrl_node *cn = find_node(m->node);
    if (!cn)
        return;
    const probe_result *r = &m->probe;
    bool ok = r->outcome == PROBE_OK;
    cn->v.last_probe_ms = now;
    cn->v.probes_total++;
    cn->v.http_status = r->http_status;
    cn->v.last_latency_ms = r->latency_ms;
    record_latency(cn, r);
    if (ok) {
        cn->v.last_seen_ms = now;
        cn->last_seen_dirty = true;
        cn->fail_start_ms = 0;
    } else {
        cn->v.probes_failed++;
        cn->v.last_failure_ms = now;
        snprintf(cn->v.last_failure_reason, sizeof cn->v.last_failure_reason, "%s", r->reason);
        if (cn->h.consecutive_failures == 0)
            cn->fail_start_ms = now;
    }
    health_params p = {.fall = C.cfg->fall, .rise = C.cfg->rise};
    health_transition t = health_apply(&cn->h, &p, ok, now);
    cn->v.consecutive_failures = cn->h.consecutive_failures;
    cn->v.consecutive_successes = cn->h.consecutive_successes;
    C.dirty = true;
    if (t.changed) {
        cn->v.prev_state = t.from;
        cn->v.state = t.to;
        cn->v.state_since_ms = now;
        cn->status_dirty = true;
        if (t.from == NODE_ONLINE) {
            C.confirm_since_ms = now;
            prober_trigger_others(cn->v.id);
        }
        emit(EV_STATE_CHANGE, cn->v.id, node_state_name(t.from), node_state_name(t.to), 0, 0,
             "%s: %s -> %s (%s)", cn->v.id, node_state_name(t.from), node_state_name(t.to),
             ok ? "probe ok" : r->reason);
        /* suspect <-> online changes neither routing nor assignments */
        if (node_state_placeable(t.from) != node_state_placeable(t.to) ||
            node_state_routable(t.from) != node_state_routable(t.to))
            C.need_converge = true; /* which also schedules the end of a new hold-down */
    }
}

/* ------------------------------------------------------------------------------------------
 * Operator actions
 * ------------------------------------------------------------------------------------------ */

static void on_node_action(const kg_msg *m, node_state target, int64_t now)
{
    ctrl_node *cn = find_node(m->node);
    if (!cn) {
        reply_finish(m->reply, 404, "unknown_node", "no node with that id");
        return;
    }
    if (!C.leader) {
        reply_finish(m->reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    node_state before = cn->h.state;
    if (target == NODE_ONLINE && (before == NODE_ONLINE || before == NODE_SUSPECT)) {
        reply_finish(m->reply, 200, "", "node is already enabled");
        return;
    }
    health_transition t = health_set_operator(&cn->h, target, now);
    cn->v.prev_state = before;
    cn->v.state = cn->h.state;
    cn->v.state_since_ms = now;
    cn->v.consecutive_failures = cn->v.consecutive_successes = 0;
    cn->status_dirty = true;
    C.need_converge = true;
    C.dirty = true;
    emit(EV_OPERATOR, cn->v.id, node_state_name(before), node_state_name(cn->h.state), 0, 0,
         "%s set %s to %s", m->actor[0] ? m->actor : "operator", cn->v.id,
         target == NODE_ONLINE ? "enabled (recovering until it passes its probes)"
                               : node_state_name(target));
    if (t.changed && target == NODE_ONLINE)
        prober_trigger_all();
    char detail[128];
    snprintf(detail, sizeof detail, "%s is now %s", cn->v.id, node_state_name(cn->h.state));
    reply_finish(m->reply, 200, "", detail);
}

static void handle(kg_msg *m, int64_t now)
{
    char detail[160];
    switch (m->kind) {
    case MSG_PROBE_RESULT:
        on_probe(m, now);
        break;
    case MSG_TRIGGER_HEALTH_CHECK:
        prober_trigger_all();
        emit(EV_OPERATOR, NULL, "", "", 0, 0, "%s triggered a health check of every node",
             m->actor[0] ? m->actor : "operator");
        reply_finish(m->reply, 202, "", "probing every node now");
        break;
    case MSG_UPDATE_LOADS:
        if (!ensure_db() || !load_monitors(now)) {
            reply_finish(m->reply, 503, "database_unavailable", C.db_error);
            break;
        }
        snprintf(detail, sizeof detail, "%zu monitors re-read", C.mon.n);
        reply_finish(m->reply, 200, "", detail);
        break;
    case MSG_TRIGGER_REBALANCE:
        reb_start(EV_REBALANCE, m->actor, m->reply);
        break;
    case MSG_FORCE_REBALANCE_ALL:
        reb_start(EV_FORCE_REBALANCE, m->actor, m->reply);
        break;
    case MSG_CANCEL_REBALANCE:
        if (!C.reb.running) {
            reply_finish(m->reply, 409, "not_running", "no rebalance is running");
            break;
        }
        reb_finish("cancelled", "cancelled by the operator");
        reply_finish(m->reply, 200, "", "rebalance cancelled");
        break;
    case MSG_NODE_DRAIN:
        on_node_action(m, NODE_DRAINING, now);
        break;
    case MSG_NODE_MAINTENANCE:
        on_node_action(m, NODE_MAINTENANCE, now);
        break;
    case MSG_NODE_ENABLE:
        on_node_action(m, NODE_ONLINE, now);
        break;
    case MSG_NGINX_OUTCOME:
        if (m->flag)
            emit(EV_NGINX_RELOAD, NULL, "", "", 0, (int64_t)m->value,
                 "nginx reloaded with the new upstream");
        else
            emit(EV_NGINX_FAILED, NULL, "", "", 0, (int64_t)m->value,
                 "nginx validation/reload failed, kept the last good file: %.150s", m->text);
        break;
    case MSG_SHUTDOWN:
        reply_finish(m->reply, 200, "", "stopping");
        break;
    }
}

/* ------------------------------------------------------------------------------------------
 * Leader lease
 * ------------------------------------------------------------------------------------------ */

static void renew_lease(int64_t now)
{
    C.next_lease_ms = now + C.cfg->lease_ttl_ms / 3;
    if (!ensure_db()) {
        /* the lease could not be renewed: after a whole lease period another controller may
         * hold it, so stop claiming to lead (writes were fenced anyway) */
        if (C.leader && C.cfg->db_host && now - C.last_lease_ok_ms > C.cfg->lease_ttl_ms) {
            set_role(false, C.generation);
            emit(EV_LEADER, NULL, "leader", "follower", 0, 0,
                 "lease not renewed for %d ms (database unavailable)", C.cfg->lease_ttl_ms);
        }
        return;
    }
    bool leader = false;
    int64_t gen = 0;
    char err[256];
    if (C.store->ops->lease(C.store, C.cfg->instance_id, C.cfg->lease_ttl_ms, &leader, &gen, err,
                            sizeof err) != STORE_OK) {
        db_failed("leader lease", err);
        if (C.leader) {
            set_role(false, C.generation);
            emit(EV_LEADER, NULL, "leader", "follower", 0, 0, "lease lost: %.120s", err);
        }
        return;
    }
    if (leader != C.leader || (leader && gen != C.generation)) {
        emit(EV_LEADER, NULL, C.leader ? "leader" : "follower", leader ? "leader" : "follower",
             0, 0, "%s is %s (generation %lld)", C.cfg->instance_id,
             leader ? "the leader" : "a follower", (long long)gen);
        if (leader)
            C.need_converge = true;
    }
    set_role(leader, gen);
    C.last_lease_ok_ms = now;
}

/* ------------------------------------------------------------------------------------------
 * Snapshot
 * ------------------------------------------------------------------------------------------ */

static void count_monitors(kg_snapshot *s)
{
    int nn = C.names.n;
    int *eff = calloc((size_t)nn + 1, sizeof *eff);
    int *home = calloc((size_t)nn + 1, sizeof *home);
    int *pinned = calloc((size_t)nn + 1, sizeof *pinned);
    if (!eff || !home || !pinned)
        goto out;
    for (size_t i = 0; i < C.mon.n; i++) {
        const plan_monitor *m = &C.mon.monitors[i];
        s->monitors_total++;
        if (!m->active)
            continue;
        s->monitors_active++;
        int32_t e = plan_effective(m);
        if (e < 0) {
            s->monitors_unassigned++;
            continue;
        }
        eff[e]++;
        if (m->home >= 0)
            home[m->home]++;
        if (m->over >= 0 && !m->ours)
            pinned[m->over]++;
        ctrl_node *cn = find_node(nametab_name(&C.names, e));
        if (!cn || !node_state_routable(cn->h.state))
            s->monitors_stranded++;
    }
    for (int i = 0; i < s->n_nodes; i++) {
        int32_t idx = nametab_find(&C.names, s->nodes[i].id, strlen(s->nodes[i].id));
        if (idx < 0)
            continue;
        s->nodes[i].effective_monitors = eff[idx];
        s->nodes[i].home_monitors = home[idx];
        s->nodes[i].pinned_monitors = pinned[idx];
    }
out:
    free(eff);
    free(home);
    free(pinned);
}

static void publish(int64_t now)
{
    kg_snapshot *s = snapshot_new(C.n_nodes);
    if (!s) {
        log_error("out of memory building a snapshot");
        return;
    }
    s->built_ms = now;
    s->started_ms = C.started_ms;
    for (int i = 0; i < C.n_nodes; i++) {
        C.nodes[i].v.state = C.nodes[i].h.state;
        s->nodes[i] = C.nodes[i].v;
        if (node_state_placeable(C.nodes[i].h.state))
            s->nodes_online++;
    }
    count_monitors(s);
    s->monitors_refreshed_ms = C.mon_loaded_ms;
    s->monitor_limit = C.cfg->monitor_limit;
    s->db_ok = C.db_ok;
    snprintf(s->db_backend, sizeof s->db_backend, "%s", C.cfg->db_host ? "mariadb" : "sqlite");
    snprintf(s->db_error, sizeof s->db_error, "%s", C.db_error);
    s->db_errors_total = C.db_errors_total;
    s->is_leader = C.leader;
    s->leader_generation = C.generation;
    snprintf(s->instance_id, sizeof s->instance_id, "%s", C.cfg->instance_id);
    s->panic = C.panic;
    snprintf(s->panic_reason, sizeof s->panic_reason, "%s", C.panic_reason);
    s->rebalance = C.reb_view;
    s->failovers_total = C.failovers_total;
    s->reverts_total = C.reverts_total;
    s->rebalances_total = C.rebalances_total;
    s->adoptions_total = C.adoptions_total;
    s->monitors_moved_total = C.moved_total;
    s->reconcile_calls_total = C.reconcile_calls;
    s->reconcile_failures_total = C.reconcile_failures;
    memcpy(s->latency_buckets, C.lat_buckets, sizeof s->latency_buckets);
    s->latency_sum_ms = C.lat_sum;
    s->latency_count = C.lat_count;
    memcpy(s->recent_events, C.recent, sizeof C.recent[0] * (size_t)C.n_recent);
    s->n_recent_events = C.n_recent;

    /* nginx follows the nodes (frozen while the panic guard is engaged), on its own thread:
     * a slow `nginx -t` must not delay probing or failover */
    nginx_worker_submit(s->nodes, s->n_nodes, C.panic);
    nginx_worker_status(&s->nginx);
    snapshot_publish(s);
    C.dirty = false;
}

/* ------------------------------------------------------------------------------------------
 * The loop
 * ------------------------------------------------------------------------------------------ */

static int64_t min_due(int64_t a, int64_t b) { return (b > 0 && b < a) ? b : a; }

/* History retention: events older than this are deleted, hourly, locally and (by the
 * leader) in the cluster database, so months of flapping cannot fill a disk. */
#define HISTORY_RETENTION_MS (90LL * 24 * 3600 * 1000)

static void prune_history(int64_t now)
{
    C.next_prune_ms = now + 3600 * 1000;
    int64_t before = now - HISTORY_RETENTION_MS;
    int n = events_prune(before);
    if (n > 0)
        log_info("history: %d local events older than 90 days deleted", n);
    if (C.leader && C.db_ok && C.store) {
        char err[256];
        int rc = C.store->ops->prune_events(C.store, before, err, sizeof err);
        if (rc == STORE_FENCED)
            fenced("prune events");
        else if (rc != STORE_OK)
            db_failed("prune events", err);
    }
}

static void refresh(int64_t now)
{
    C.next_refresh_ms = now + C.cfg->refresh_interval_ms;
    if (!ensure_db())
        return;
    refresh_nodes(now);
    if (C.db_ok)
        write_node_states();
    if (C.db_ok)
        load_monitors(now);
    if (C.db_ok)
        nudge(NULL, 0); /* retries of failed nudges */
}

static void *controller_main(void *arg)
{
    (void)arg;
    int64_t now = now_ms();
    C.started_ms = now;
    C.next_db_retry_ms = 0;
    refresh(now);
    renew_lease(now);
    C.need_converge = true;
    publish(now);
    bool stop = false;
    while (!stop) {
        now = now_ms();
        compensate_clock_step(now);
        int64_t due = now + 1000;
        due = min_due(due, C.next_refresh_ms);
        due = min_due(due, C.next_lease_ms);
        due = min_due(due, C.next_converge_ms);
        if (C.reb.running)
            due = min_due(due, C.reb.next_batch_ms);
        if (C.confirm_since_ms)
            due = min_due(due, C.confirm_since_ms + C.cfg->health_timeout_ms + 260);
        int wait = (int)(due - now);
        kg_msg *m = mailbox_wait(wait < 0 ? 0 : wait);
        /* take everything already queued before acting, so a burst of probe results causes
         * one convergence and one snapshot */
        int handled = 0;
        while (m) {
            now = now_ms();
            if (m->kind == MSG_SHUTDOWN)
                stop = true;
            handle(m, now);
            mailbox_free(m);
            if (stop || ++handled >= 256)
                break;
            m = mailbox_wait(0);
        }
        if (stop)
            break;
        now = now_ms();
        if (now >= C.next_refresh_ms)
            refresh(now);
        if (now >= C.next_lease_ms)
            renew_lease(now);
        if (now >= C.next_prune_ms)
            prune_history(now);
        if (C.db_ok && C.schema_ready) {
            bool any_dirty = false;
            for (int i = 0; i < C.n_nodes && !any_dirty; i++)
                any_dirty = C.nodes[i].status_dirty;
            if (any_dirty)
                write_node_states();
        } else if (now >= C.next_db_retry_ms && ensure_db()) {
            refresh(now);
        }
        update_panic(now); /* after the burst of probe results, before any move */
        if (C.need_converge || now >= C.next_converge_ms)
            converge(now);
        if (C.reb.running)
            reb_step(now);
        else
            maybe_auto_rebalance(now);
        if (C.dirty)
            publish(now);
    }
    return NULL;
}

int controller_start(const kg_config *cfg, char *err, size_t errlen)
{
    memset(&C, 0, sizeof C);
    C.cfg = cfg;
    nametab_init(&C.names);
    if (events_open(cfg->state_dir, err, errlen) != 0)
        return -1;
    C.n_recent = events_load_recent(C.recent, KG_RECENT_EVENTS);
    kg_nginx_feed *feed = nginx_feed_new(cfg, err, errlen);
    if (!feed || nginx_worker_start(feed, err, errlen) != 0) {
        events_close();
        return -1;
    }
    int64_t now = now_ms();
    for (int i = 0; i < cfg->n_static_nodes; i++)
        add_node(cfg->static_nodes[i].id, cfg->static_nodes[i].id, cfg->static_nodes[i].host,
                 NODE_ONLINE, now);
    if (pthread_create(&C.thread, NULL, controller_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the controller thread: %s", strerror(errno));
        nginx_worker_stop();
        events_close();
        free(C.nodes);
        C.nodes = NULL;
        return -1;
    }
    C.started = true;
    return 0;
}

void controller_stop(void)
{
    if (!C.started)
        return;
    kg_msg m = {.kind = MSG_SHUTDOWN};
    mailbox_post(&m);
    pthread_join(C.thread, NULL);
    mailbox_shutdown();
    mailbox_drain();
    free(C.reb.moves);
    free(C.nodes);
    store_free_monitors(&C.mon);
    nametab_free(&C.names);
    if (C.store)
        store_close(C.store);
    nginx_worker_stop();
    events_close();
    memset(&C, 0, sizeof C);
}
