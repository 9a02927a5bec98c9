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

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assign.h"
#include "clock.h"
#include "db_worker.h"
#include "events.h"
#include "health.h"
#include "hostcheck.h"
#include "lease.h"
#include "netpolicy.h"
#include "log.h"
#include "mailbox.h"
#include "monitor_ops.h"
#include "nametab.h"
#include "nginx_feed.h"
#include "nginx_worker.h"
#include "panic.h"
#include "plan_events.h"
#include "policy.h"
#include "probe.h"
#include "reconcile.h"
#include "reconcile_sched.h"
#include "setup_watch.h"
#include "snapshot.h"
#include "store.h"
#include "webhook.h"

/* History retention: older events are deleted hourly, locally and (by the leader) in the
 * cluster database, so months of flapping cannot fill a disk. */
#define HISTORY_RETENTION_MS (90LL * 24 * 3600 * 1000)
#define DB_EVENTS_MAX 10000      /* events waiting for the cluster database */
#define LOAD_WAITERS_MAX 16      /* update-loads requests waiting for a monitor read */
#define DB_PING_INTERVAL_MS 1000 /* an idle database is asked to answer this often */
#define MONITOR_OPS_QUEUED 8     /* operators' move / pin / unpin requests waiting for the db */

/* ==========================================================================================
 * State owned by the controller thread
 * ========================================================================================== */

typedef struct {
    kg_node_view v;          /* what is published (state mirrors h.state) */
    node_health h;           /* times on the monotonic clock */
    int64_t fail_start_ms;   /* monotonic start of the current failure streak, 0 = passing */
    int64_t alive_since_ms;  /* monotonic: since when every probe passed, 0 = failing */
    int64_t last_probe_ms;   /* monotonic, 0 = never */
    bool in_db;              /* row seen in the node table */
    bool synced;             /* persisted node.status applied once (static nodes start early) */
    char written[21];        /* node.status as last written by us ("" = not yet) */
    int64_t seen_written_ms; /* last_seen as last written (wall) */
    rsched_node rs;          /* reconcile calls to this node */
} ctrl_node;

/* The monitor rows as last read (or as patched after our own applied moves).  The set carries
 * its own nametab: plans made on it, and moves sent to the database, use its indexes. */
typedef struct {
    store_monitor_set rows;
    kg_nametab tab;
    bool loaded;
    int64_t as_of_ms;        /* monotonic: the read started (or our moves were applied) then */
    int64_t wall_ms;
} monitor_set;

typedef enum { APPLY_NONE = 0, APPLY_CONVERGE, APPLY_REBALANCE, APPLY_MONITOR_OP } apply_kind;

/* An operator's move / pin / unpin, waiting for the database applier. */
typedef struct {
    monitor_op_request *req;
    kg_reply *reply;
    char actor[64];
} queued_monitor_op;

/* A rebalance in progress: its planned moves, applied in paced, cancellable batches. */
typedef struct {
    bool running;
    kg_event_kind kind;      /* EV_REBALANCE or EV_FORCE_REBALANCE */
    plan_move *moves;
    kg_nametab tab;          /* the index space of moves */
    size_t n, done, applied, skipped;
    int64_t started_ms, next_batch_ms;   /* monotonic */
    int64_t started_wall_ms;
    char actor[64];
} rebalance_op;

/* A rebalance asked for, waiting for a fresh monitor read before it is planned. */
typedef struct {
    bool pending;
    kg_event_kind kind;
    char actor[64];
    kg_reply *reply;         /* NULL for the automatic trigger */
    int64_t asked_ms;
} rebalance_request;

static struct {
    const kg_config *cfg;
    pthread_t thread;
    bool started;
    int64_t now, wall;       /* clocks as of the current step */
    int64_t started_ms, started_wall_ms;

    /* database (the applier owns the connection; this is what we know of it) */
    bool db_ok;
    bool db_was_ok;          /* answered at least once (no "back up" event on first connect) */
    bool schema_ready;
    const char *db_state;
    char db_error[256];
    int64_t db_errors_total;
    int64_t db_down_since_wall;
    int64_t db_last_ok_wall;
    int64_t db_backoff_ms;
    int64_t db_next_try_ms;  /* monotonic: no job before this while down */
    bool db_busy;            /* a job is with the applier */
    int64_t db_job_started;  /* monotonic */
    uint64_t db_job_seq;
    bool db_silent;          /* the running job passed DB_TIMEOUT: reported as down */
    bool static_dirty;       /* rewrite the static nodes' rows with the next job */
    apply_kind applying;     /* moves of the running job belong to this operation */
    kg_event *db_events;     /* events for kumaguard_event, oldest first */
    size_t n_db_events, cap_db_events;
    int64_t db_events_dropped;
    kg_reply *load_waiters[LOAD_WAITERS_MAX];
    int n_load_waiters;
    queued_monitor_op monitor_ops[MONITOR_OPS_QUEUED];
    int n_monitor_ops;
    kg_reply *monitor_op_reply; /* the running job's monitor operation answers here */
    bool want_nodes, want_monitors;
    int64_t next_refresh_ms, next_prune_ms, next_ping_ms;

    ctrl_node *nodes;        /* sorted by id */
    int n_nodes;
    monitor_set mon;

    /* leadership: writes carry the generation; the lease is trusted on our monotonic clock
     * only until its request's start plus the TTL minus a margin */
    bool leader;
    int64_t generation;
    int64_t next_lease_ms;
    lease_state lease;       /* lease.h: how long this controller may still lead */

    panic_state panic;
    panic_cfg pcfg;
    rsched_cfg rcfg;

    bool need_converge;      /* a state change asks for a plan on monitors read after it */
    int64_t converge_epoch;  /* monotonic: the monitors must be read after this */
    int64_t next_converge_ms;/* periodic convergence: retries no-target, adoption, reverts */
    int64_t next_revert_ms;  /* earliest next revert batch */
    int64_t next_auto_rebalance_ms;
    int64_t auto_checked_ms; /* the monitor set the trigger last looked at */

    rebalance_op reb;
    rebalance_request reb_req;
    kg_rebalance_view reb_view;

    kg_event recent[KG_RECENT_EVENTS];
    int n_recent;
    bool history_ok;

    int64_t failovers_total, reverts_total, rebalances_total, adoptions_total;
    int64_t moved_total, reconcile_calls, reconcile_failures;
    int64_t lat_buckets[11];
    double lat_sum;
    int64_t lat_count;

    uint32_t rng;
    bool dirty;              /* something visible changed: publish */
} C;

static void refresh_clocks(void)
{
    C.now = kg_mono_ms();
    C.wall = kg_wall_ms();
}

/* Wall-clock time of a monotonic instant (for display). */
static int64_t to_wall(int64_t mono) { return mono ? mono + (C.wall - C.now) : 0; }

static uint32_t next_rand(void)
{
    C.rng ^= C.rng << 13;
    C.rng ^= C.rng >> 17;
    C.rng ^= C.rng << 5;
    return C.rng;
}

/* ==========================================================================================
 * Events
 * ========================================================================================== */

static void queue_db_event(const kg_event *ev)
{
    if (C.n_db_events == C.cap_db_events) {
        if (C.cap_db_events >= DB_EVENTS_MAX) {
            /* the database has been away for long: keep the newest (local history has all) */
            memmove(C.db_events, C.db_events + 1, sizeof *C.db_events * (C.n_db_events - 1));
            C.n_db_events--;
            C.db_events_dropped++;
        } else {
            size_t nc = C.cap_db_events ? C.cap_db_events * 2 : 64;
            kg_event *g = realloc(C.db_events, nc * sizeof *g);
            if (!g) {
                C.db_events_dropped++;
                return;
            }
            C.db_events = g;
            C.cap_db_events = nc;
        }
    }
    C.db_events[C.n_db_events++] = *ev;
}

/* Events a job could not write go back in front of the queue, keeping their order. */
static void requeue_db_events(db_job *j)
{
    kg_event *queued = C.db_events;
    size_t n_queued = C.n_db_events;
    C.db_events = j->events;
    C.n_db_events = C.cap_db_events = j->n_events;
    j->events = NULL;
    j->n_events = 0;
    for (size_t i = 0; i < n_queued; i++)
        queue_db_event(&queued[i]);
    free(queued);
}

static void record_event(kg_event *ev)
{
    if (!ev->ts_ms)
        ev->ts_ms = C.wall;
    events_submit(ev); /* local history: assigns the id, written by the history thread */
    webhook_submit(ev); /* queued for the webhook threads; never waits */
    if (C.leader)      /* followers keep history locally only */
        queue_db_event(ev);
    if (C.n_recent == KG_RECENT_EVENTS) {
        memmove(C.recent, C.recent + 1, sizeof C.recent[0] * (KG_RECENT_EVENTS - 1));
        C.n_recent--;
    }
    C.recent[C.n_recent++] = *ev;
    log_info("event %s node=%s from=%s to=%s count=%d duration=%lldms: %s",
             event_kind_name(ev->kind), ev->node, ev->from, ev->to, ev->count,
             (long long)ev->duration_ms, ev->reason);
    C.dirty = true;
}

static void emit(kg_event_kind kind, const char *node, const char *from, const char *to,
                 int count, int64_t duration_ms, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void emit(kg_event_kind kind, const char *node, const char *from, const char *to,
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
    record_event(&ev);
}

/* The local history is written by another thread: surface its failures here. */
static void check_history(void)
{
    events_health_t h;
    events_health(&h);
    if (h.ok == C.history_ok)
        return;
    C.history_ok = h.ok;
    C.dirty = true;
    if (!h.ok)
        log_error("local history: %s (events stay in memory and in the cluster database)",
                  h.error);
    emit(EV_HISTORY, NULL, h.ok ? "failing" : "ok", h.ok ? "ok" : "failing", 0, 0,
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

static ctrl_node *find_node(const char *id)
{
    if (!id || C.n_nodes == 0 || strlen(id) > KG_NODE_ID_MAX)
        return NULL; /* a longer id would be cut into another node's id */
    ctrl_node key;
    snprintf(key.v.id, sizeof key.v.id, "%s", id);
    return bsearch(&key, C.nodes, (size_t)C.n_nodes, sizeof *C.nodes, node_cmp);
}

static bool is_static(const char *id)
{
    for (int i = 0; i < C.cfg->n_static_nodes; i++)
        if (strcmp(C.cfg->static_nodes[i].id, id) == 0)
            return true;
    return false;
}

/* Host validity, with the reason and its fix when it is not usable. */
static void check_host(ctrl_node *cn)
{
    char herr[KG_REASON_MAX] = "";
    bool valid = netpolicy_host_allowed(&C.cfg->node_policy, cn->v.host, herr, sizeof herr) &&
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
        C.dirty = true;
    cn->v.host_valid = valid;
}

static ctrl_node *add_node(const char *id, const char *name, const char *host,
                           node_state persisted)
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
    n->v.host_valid = true; /* so check_host logs a first problem */
    check_host(n);
    n->v.last_latency_ms = -1;
    health_init(&n->h, persisted, C.now);
    n->v.state = n->v.prev_state = n->h.state;
    n->v.state_since_ms = C.wall;
    n->v.monitor_limit = C.cfg->monitor_limit;
    n->v.is_static = is_static(id);
    rsched_init(&n->rs);
    if (n->h.state == NODE_OFFLINE)
        rsched_mark_returning(&n->rs); /* monitors may have moved away while it was down */
    qsort(C.nodes, (size_t)C.n_nodes, sizeof *C.nodes, node_cmp);
    C.dirty = true;
    return find_node(id);
}

/* Records a state change made by health.c: view, event, what it triggers. */
static void on_transition(ctrl_node *cn, health_transition t, const char *why)
{
    if (!t.changed)
        return;
    cn->v.prev_state = t.from;
    cn->v.state = t.to;
    cn->v.state_since_ms = C.wall;
    C.dirty = true;
    if (t.from == NODE_ONLINE || t.from == NODE_SUSPECT) {
        if (t.to != NODE_ONLINE && t.to != NODE_SUSPECT) {
            /* it left online: confirm against every other node before moving anything */
            panic_confirm_start(&C.panic, C.now);
            prober_trigger_others(cn->v.id);
        }
    }
    if (t.to == NODE_OFFLINE)
        rsched_mark_returning(&cn->rs); /* when it answers again, tell it first */
    emit(EV_STATE_CHANGE, cn->v.id, node_state_name(t.from), node_state_name(t.to), 0, 0,
         "%s: %s -> %s (%s)", cn->v.id, node_state_name(t.from), node_state_name(t.to), why);
    /* suspect <-> online changes neither routing nor assignments */
    if (node_state_placeable(t.from) != node_state_placeable(t.to) ||
        node_state_routable(t.from) != node_state_routable(t.to)) {
        C.need_converge = true;
        C.converge_epoch = C.now;
    }
}

/* Merges the node table into C.nodes: new rows are added, hosts follow the table, rows that
 * vanished (and are not static) are dropped. */
static void merge_node_rows(const store_node_row *rows, size_t n)
{
    for (int i = 0; i < C.n_nodes; i++)
        C.nodes[i].in_db = false;
    for (size_t r = 0; r < n; r++) {
        if (strlen(rows[r].id) > KG_NODE_ID_MAX) { /* never cut: a cut id names no node */
            log_warn("node row '%.50s...' ignored: node ids are at most %d characters",
                     rows[r].id, KG_NODE_ID_MAX);
            continue;
        }
        node_state db_state = node_state_parse(rows[r].status);
        ctrl_node *cn = find_node(rows[r].id);
        if (!cn) {
            cn = add_node(rows[r].id, rows[r].name, rows[r].host, db_state);
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
            health_init(&h, db_state, C.now);
            if (h.state != cn->h.state) {
                cn->h = h;
                cn->v.state = cn->v.prev_state = cn->h.state;
                cn->v.state_since_ms = C.wall;
                C.dirty = true;
                if (cn->h.state == NODE_OFFLINE)
                    rsched_mark_returning(&cn->rs);
            }
        }
        if (!C.leader) {
            node_state to = policy_follower_state(cn->h.state, db_state);
            if (to != NODE_UNKNOWN)
                on_transition(cn, health_set_operator(&cn->h, to, C.now),
                              "mirrored from the leader");
        }
        cn->v.is_primary = rows[r].is_primary;
        if (rows[r].name[0] && strcmp(cn->v.name, rows[r].name) != 0) {
            snprintf(cn->v.name, sizeof cn->v.name, "%s", rows[r].name);
            C.dirty = true;
        }
        if (strcmp(cn->v.host, rows[r].host) != 0) {
            if (cn->v.is_static) {
                C.static_dirty = true; /* the configuration wins over what a node registered */
            } else {
                snprintf(cn->v.host, sizeof cn->v.host, "%s", rows[r].host);
                C.dirty = true;
            }
        }
        check_host(cn);
        /* A Kuma node that restarts writes status='online' over ours: ours is the authority. */
        snprintf(cn->written, sizeof cn->written, "%s", rows[r].status);
    }
    int w = 0;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        if (!cn->in_db && !cn->v.is_static) {
            log_info("node %s left the node table", cn->v.id);
            C.dirty = true;
            C.need_converge = true;
            C.converge_epoch = C.now;
            continue;
        }
        C.nodes[w++] = *cn;
    }
    C.n_nodes = w;
}

/* node.status (and last_seen) values that differ from what the table holds. */
static store_node_state *node_states_to_write(size_t *n_out)
{
    *n_out = 0;
    if (!C.leader || C.n_nodes == 0)
        return NULL;
    store_node_state *st = calloc((size_t)C.n_nodes, sizeof *st);
    if (!st)
        return NULL;
    size_t n = 0;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        const char *want = node_state_db_value(cn->h.state);
        bool status_dirty = strcmp(cn->written, want) != 0;
        bool seen_dirty = cn->v.last_seen_ms > cn->seen_written_ms &&
                          (C.wall - cn->seen_written_ms >= C.cfg->refresh_interval_ms ||
                           status_dirty);
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
 * Leadership
 * ========================================================================================== */

static void set_role(bool leader, int64_t generation, const char *why)
{
    if (leader != C.leader || (leader && generation != C.generation)) {
        emit(EV_LEADER, NULL, C.leader ? "leader" : "follower", leader ? "leader" : "follower",
             0, 0, "%s is %s (generation %lld): %s", C.cfg->instance_id,
             leader ? "the leader" : "a follower", (long long)generation, why);
        if (leader) {
            C.need_converge = true;
            C.converge_epoch = C.now;
        } else if (C.reb.running) {
            /* finished below, by reb_step */
        }
    }
    C.leader = leader;
    C.generation = generation;
    C.dirty = true;
}

/* What lease_decide() (lease.h) said, as a role.  A grant counts from when the job that asked
 * for it started (no later than the database ran it); without a newer one in time this
 * controller stops leading on its own clock, before the lease can expire in the database. */
static void lease_answered(lease_answer answer, int64_t generation, int64_t sent,
                           const char *err)
{
    lease_timing t = {C.cfg->lease_ttl_ms, lease_margin_ms(C.cfg->lease_ttl_ms)};
    C.lease.leader = C.leader; /* a fenced write may have stepped down since */
    C.lease.generation = C.generation ? C.generation : C.lease.generation;
    switch (lease_decide(&C.lease, &t, answer, generation, sent, C.now)) {
    case LEASE_BECAME_LEADER:
        set_role(true, C.lease.generation, "lease held");
        break;
    case LEASE_STEP_DOWN_LOST:
        set_role(false, C.lease.generation,
                 answer == LEASE_LOST ? err : "another controller holds the lease");
        break;
    case LEASE_STEP_DOWN_EXPIRED:
        set_role(false, C.generation, "lease not renewed in time: stepped down before it "
                                      "could expire elsewhere");
        break;
    case LEASE_KEEP:
        break;
    }
}

static void check_lease_expiry(void)
{
    if (C.leader && C.cfg->db_host)
        lease_answered(LEASE_NO_ANSWER, 0, 0, "");
}

/* ==========================================================================================
 * Database: building jobs, reading their results
 * ========================================================================================== */

static void db_down(const char *what, const char *err)
{
    C.db_errors_total++;
    snprintf(C.db_error, sizeof C.db_error, "%s: %s", what, err);
    C.db_backoff_ms = policy_db_backoff(C.db_backoff_ms, C.cfg->db_retry_max_ms, next_rand());
    C.db_next_try_ms = C.now + C.db_backoff_ms;
    C.dirty = true;
    if (C.db_ok || !C.db_down_since_wall) {
        C.db_ok = false;
        C.db_down_since_wall = C.wall;
        log_error("database unavailable (%s): %s", what, err);
        emit(EV_DB, NULL, "up", "down", 0, 0, "database unavailable during %s: %.120s", what,
             err);
    }
}

static void db_up(void)
{
    C.db_backoff_ms = 0;
    C.db_last_ok_wall = C.wall;
    C.db_state = "up";
    if (!C.db_ok) {
        C.db_ok = true;
        C.db_error[0] = 0;
        C.db_down_since_wall = 0;
        log_info("database available (%s)", C.cfg->db_host ? "mariadb" : "sqlite");
        if (C.db_was_ok)
            emit(EV_DB, NULL, "down", "up", 0, 0, "database available again (%s)",
                 C.cfg->db_host ? "mariadb" : "sqlite");
        C.db_was_ok = true;
        C.need_converge = true;
        C.converge_epoch = C.now;
        C.dirty = true;
    }
}

/* A job that has not come back within DB_TIMEOUT means the database is not answering: say so
 * now (the client library may retry a read several times before it gives up). */
static void db_watchdog(void)
{
    if (!C.db_busy || C.db_silent)
        return;
    int64_t limit = C.cfg->db_timeout_ms + 250;
    if (C.reb.running || C.applying != APPLY_NONE)
        limit += C.cfg->db_timeout_ms; /* a large apply may take a while by itself */
    if (C.now - C.db_job_started < limit)
        return;
    C.db_silent = true;
    C.db_state = "no_answer";
    char msg[96];
    snprintf(msg, sizeof msg, "no answer for %lld ms", (long long)(C.now - C.db_job_started));
    db_down("database job", msg);
}

static void finish_load_waiters(int status, const char *error, const char *detail)
{
    for (int i = 0; i < C.n_load_waiters; i++) {
        reply_finish(C.load_waiters[i], status, error, detail);
        reply_put(C.load_waiters[i]);
    }
    C.n_load_waiters = 0;
}

static void reb_finish(const char *phase, const char *error);
static void reb_plan(void);
static bool proving(void);
static void applied_moves(const db_job *j);

/* Changes to the monitor table kumaguard did not make (Kuma added, removed, paused or re-pinned
 * monitors; our own moves are already in C.mon) are work for the nodes too: their next
 * reconcile starts or stops those monitors, which lengthens it.  Reported to the reconcile
 * scheduler as committed between the two reads, so a cron's worst case counts them. */
static void note_foreign_changes(const store_monitor_set *fresh, const kg_nametab *ftab,
                                 int64_t from_ms, int64_t to_ms)
{
    if (!C.mon.loaded || C.n_nodes == 0)
        return;
    int *starts = calloc((size_t)C.n_nodes, sizeof *starts);
    int *stops = calloc((size_t)C.n_nodes, sizeof *stops);
    if (!starts || !stops)
        goto out;
    const plan_monitor *a = C.mon.rows.monitors, *b = fresh->monitors;
    size_t na = C.mon.rows.n, nb = fresh->n, i = 0, k = 0;
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
        const char *was = old && old->active ? nametab_name(&C.mon.tab, plan_effective(old))
                                             : NULL;
        const char *now = cur && cur->active ? nametab_name(ftab, plan_effective(cur)) : NULL;
        if ((was == NULL && now == NULL) || (was && now && strcmp(was, now) == 0))
            continue;
        ctrl_node *x = was ? find_node(was) : NULL, *y = now ? find_node(now) : NULL;
        if (x)
            stops[x - C.nodes]++;
        if (y)
            starts[y - C.nodes]++;
    }
    for (int n = 0; n < C.n_nodes; n++)
        rsched_add_work_between(&C.nodes[n].rs, starts[n], stops[n], from_ms, to_ms);
out:
    free(starts);
    free(stops);
}

static void set_monitors(db_job *j)
{
    note_foreign_changes(&j->monitors, &j->monitors_tab, C.mon.as_of_ms, j->started_mono_ms);
    store_free_monitors(&C.mon.rows);
    nametab_free(&C.mon.tab);
    C.mon.rows = j->monitors;
    C.mon.tab = j->monitors_tab;
    memset(&j->monitors, 0, sizeof j->monitors);
    nametab_init(&j->monitors_tab);
    C.mon.loaded = true;
    C.mon.as_of_ms = j->started_mono_ms;
    C.mon.wall_ms = to_wall(j->started_mono_ms);
    C.dirty = true;
}

static void on_db_done(db_job *j)
{
    C.db_busy = false;
    C.db_silent = false;
    apply_kind applying = C.applying;
    C.applying = APPLY_NONE;
    if (j->schema_ready)
        C.schema_ready = true;
    if (j->n_events && !j->events_done && C.leader)
        requeue_db_events(j);
    if (j->lease_done)
        lease_answered(j->lease_leader ? LEASE_GRANTED : LEASE_REFUSED, j->lease_generation,
                       j->started_mono_ms, "");
    else if (j->lease_lost)
        lease_answered(LEASE_LOST, C.generation, j->started_mono_ms, j->error);
    if (j->rc == STORE_FENCED) {
        if (C.leader) {
            log_warn("fenced during %s: generation %lld is no longer current", j->failed_step,
                     (long long)C.generation);
            set_role(false, C.generation, "fenced: another controller leads");
            C.next_lease_ms = C.now; /* find out who leads now */
        }
        db_up(); /* the database answered */
    } else if (j->rc == STORE_SCHEMA_MISSING) {
        snprintf(C.db_error, sizeof C.db_error, "%s", j->error);
        if (C.db_state == NULL || strcmp(C.db_state, "waiting_schema") != 0)
            log_warn("%s (or start kumaguard with --init-schema)", j->error);
        C.db_state = "waiting_schema";
        C.db_ok = false;
        C.db_next_try_ms = C.now + 2000;
        C.dirty = true;
    } else if (j->rc != STORE_OK) {
        C.db_state = "down";
        db_down(j->failed_step, j->error);
    } else {
        db_up();
    }
    if (j->states_done) {
        for (size_t i = 0; i < j->n_states; i++) {
            ctrl_node *cn = find_node(j->states[i].id);
            if (!cn)
                continue;
            snprintf(cn->written, sizeof cn->written, "%s", j->states[i].status);
            if (j->states[i].last_seen_ms)
                cn->seen_written_ms = j->states[i].last_seen_ms;
        }
    }
    if (j->nodes_done)
        merge_node_rows(j->nodes, j->n_nodes);
    if (j->monitors_done) {
        set_monitors(j);
        char detail[96];
        snprintf(detail, sizeof detail, "%zu monitors re-read", C.mon.rows.n);
        finish_load_waiters(200, "", detail);
    } else if (j->load_monitors) {
        finish_load_waiters(503, "database_unavailable", C.db_error);
    }
    if (applying == APPLY_CONVERGE || applying == APPLY_REBALANCE)
        applied_moves(j);
    if (applying == APPLY_REBALANCE && !j->moves_done) {
        if (j->rc == STORE_FENCED)
            reb_finish("failed", "fenced: another controller leads");
        else /* retry the batch when the database is back */
            C.reb.next_batch_ms = C.db_next_try_ms > C.now ? C.db_next_try_ms : C.now + 1000;
    }
    if (C.reb_req.pending && j->monitors_done)
        reb_plan();
    else if (C.reb_req.pending && j->load_monitors && j->rc != STORE_OK) {
        reply_finish(C.reb_req.reply, 503, "database_unavailable", C.db_error);
        reply_put(C.reb_req.reply);
        memset(&C.reb_req, 0, sizeof C.reb_req);
    }
}

/* Builds the next job from what is wanted now; NULL when nothing is. */
static db_job *build_job(plan_move *moves, size_t n_moves, const kg_nametab *tab,
                         const char *what)
{
    db_job *j = db_job_new();
    if (!j)
        return NULL;
    j->generation = C.leader ? C.generation : 0;
    j->leader = C.leader;
    j->upsert_static = C.static_dirty;
    bool lease_due = C.cfg->db_host ? C.now >= C.next_lease_ms : !C.leader;
    if (lease_due) {
        j->lease = true;
        C.next_lease_ms = C.now + C.cfg->lease_ttl_ms / 3;
    }
    if (C.leader && C.db_ok) {
        j->states = node_states_to_write(&j->n_states);
        if (C.n_db_events) {
            j->events = C.db_events;
            j->n_events = C.n_db_events;
            C.db_events = NULL;
            C.n_db_events = C.cap_db_events = 0;
        }
        if (C.now >= C.next_prune_ms) {
            C.next_prune_ms = C.now + 3600 * 1000;
            j->prune_before_ms = C.wall - HISTORY_RETENTION_MS;
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
    j->load_nodes = C.want_nodes;
    j->load_monitors = C.want_monitors || C.n_load_waiters > 0;
    return j;
}

static bool db_idle(void) { return !C.db_busy && C.now >= C.db_next_try_ms; }

static bool submit_job(db_job *j)
{
    j->id = ++C.db_job_seq;
    if (db_worker_submit(j) != 0)
        return false;
    C.db_busy = true;
    C.db_job_started = C.now;
    C.want_nodes = C.want_monitors = false;
    C.static_dirty = false;
    return true;
}

/* Sends whatever database work is due, when the applier is free. */
static void maybe_submit(void)
{
    if (!db_idle())
        return;
    bool lease_due = C.cfg->db_host ? C.now >= C.next_lease_ms : !C.leader;
    bool something = lease_due || C.want_nodes || C.want_monitors || C.n_load_waiters ||
                     C.static_dirty || (C.leader && C.db_ok && C.n_db_events) ||
                     C.now >= C.next_ping_ms || !C.db_ok;
    if (!something && C.leader && C.db_ok) {
        size_t n;
        store_node_state *st = node_states_to_write(&n);
        something = n > 0;
        free(st);
    }
    if (!something)
        return;
    db_job *j = build_job(NULL, 0, NULL, "");
    if (!j)
        return;
    C.next_ping_ms = C.now + DB_PING_INTERVAL_MS;
    if (!submit_job(j)) {
        /* give back what the job took */
        for (size_t i = 0; i < j->n_events; i++)
            queue_db_event(&j->events[i]);
        db_job_free(j);
    }
}

/* ==========================================================================================
 * Monitors, planning, pacing
 * ========================================================================================== */

/* The planner's view of the nodes in the monitor set's index space.  Every node we know is
 * interned first, so plan_node[i] matches nametab index i; names only monitors mention are
 * UNKNOWN. */
static plan_node *build_plan_nodes(kg_nametab *tab, int *n_out)
{
    for (int i = 0; i < C.n_nodes; i++)
        if (nametab_intern(tab, C.nodes[i].v.id, strlen(C.nodes[i].v.id)) < 0)
            return NULL;
    int n = tab->n;
    plan_node *pn = calloc((size_t)(n ? n : 1), sizeof *pn);
    panic_node *pv = calloc((size_t)(C.n_nodes ? C.n_nodes : 1), sizeof *pv);
    if (!pn || !pv) {
        free(pn);
        free(pv);
        return NULL;
    }
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        pv[i] = (panic_node){.counted = health_probed(&cn->h) && cn->v.host_valid,
                             .failing = cn->h.consecutive_failures > 0 ||
                                        cn->h.state == NODE_OFFLINE,
                             .fail_start_ms = cn->fail_start_ms,
                             .last_probe_ms = cn->last_probe_ms,
                             .id = cn->v.id};
    }
    bool revert_window = C.now >= C.next_revert_ms;
    for (int i = 0; i < n; i++) {
        pn[i].id = nametab_name(tab, i);
        pn[i].state = NODE_UNKNOWN;
        pn[i].limit = C.cfg->monitor_limit;
        ctrl_node *cn = find_node(pn[i].id);
        if (!cn)
            continue;
        int k = (int)(cn - C.nodes);
        /* an unusable host cannot run monitors we could reach: treat like unknown */
        pn[i].state = cn->v.host_valid ? cn->h.state : NODE_UNKNOWN;
        /* not yet proven since we started: keeps what it runs, gets nothing new; held by the
         * panic guard: keeps what it runs */
        pn[i].keep = (node_state_placeable(cn->h.state) && !cn->h.proven) ||
                     panic_holds_node(&C.panic, pv, C.n_nodes, k);
        int64_t proven = health_proven_since(&cn->h);
        pn[i].revert_ok = revert_window && proven && cn->v.host_valid &&
                          C.now - proven >= C.cfg->recovery_hold_down_ms;
    }
    free(pv);
    *n_out = n;
    return pn;
}

/* Can the node be called at all (key configured, usable host, routable or returning)? */
static bool node_callable(const ctrl_node *cn)
{
    /* before the cluster's first user exists every node answers 401 (setup_watch.h) */
    if (!C.cfg->kuma_api_key || !cn->v.host_valid || !setup_watch_complete())
        return false;
    if (node_state_routable(cn->h.state))
        return true;
    return cn->h.state == NODE_RECOVERING && rsched_must_tell(&cn->rs);
}

/* Pacing: keeps only the moves whose target can start them (and whose live source can stop
 * them) before that node's next cron.  Returns the number kept (moves compacted in place). */
static size_t pace_moves(plan_move *moves, size_t n, const kg_nametab *tab)
{
    if (!C.cfg->reconcile_pacing || n == 0)
        return n;
    int nn = tab->n;
    int64_t *room = malloc(((size_t)nn + 1) * sizeof *room);
    bool *charge = calloc((size_t)nn + 1, sizeof *charge);
    if (!room || !charge) {
        free(room);
        free(charge);
        return n;
    }
    int64_t off = C.wall - C.now;
    for (int i = 0; i < nn; i++) {
        ctrl_node *cn = find_node(nametab_name(tab, i));
        room[i] = -1; /* unlimited: not a node we can reach */
        if (!cn || !cn->v.host_valid)
            continue;
        bool calls = C.cfg->kuma_api_key != NULL;
        room[i] = rsched_room_ms(&cn->rs, &C.rcfg, calls, cn->alive_since_ms, C.now, off);
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
        if (to >= 0 && room[to] >= 0 && room[to] < C.rcfg.start_ms)
            fits = false;
        if (from >= 0 && charge[from] && room[from] >= 0 && room[from] < C.rcfg.stop_ms)
            fits = false;
        if (!fits)
            continue;
        if (to >= 0 && room[to] >= 0)
            room[to] -= C.rcfg.start_ms;
        if (from >= 0 && charge[from] && room[from] >= 0)
            room[from] -= C.rcfg.stop_ms;
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
        /* moves were planned on C.mon (same indexes) unless a re-read replaced it since */
        if (mv->monitor_index >= C.mon.rows.n ||
            C.mon.rows.monitors[mv->monitor_index].id != mv->monitor_id) {
            C.want_monitors = true;
            return;
        }
        plan_monitor *m = &C.mon.rows.monitors[mv->monitor_index];
        int32_t to = -1;
        if (mv->to >= 0) {
            const char *name = nametab_name(tab, mv->to);
            to = name ? nametab_intern(&C.mon.tab, name, strlen(name)) : -1;
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
    C.dirty = true;
}

/* After the database applied (or refused) moves: counters, the monitor set, reconcile work,
 * events. */
static void applied_moves(const db_job *j)
{
    if (!j->moves_done)
        return;
    if (j->applied.skipped) {
        log_info("%s: %zu of %zu rows changed meanwhile and were left alone", j->what,
                 j->applied.skipped, j->n_moves);
        C.want_monitors = true;
    } else {
        patch_monitors(j->moves, j->n_moves, &j->moves_tab);
    }
    C.moved_total += (int64_t)j->applied.applied;
    /* every node whose set changed has work: starts where monitors arrive, stops where they
     * leave (counting skipped moves too: an over-estimate only lengthens a deadline) */
    for (size_t i = 0; i < j->n_moves; i++) {
        int32_t from = policy_move_from(&j->moves[i]), to = policy_move_to(&j->moves[i]);
        if (from == to)
            continue;
        ctrl_node *a = from >= 0 ? find_node(nametab_name(&j->moves_tab, from)) : NULL;
        ctrl_node *b = to >= 0 ? find_node(nametab_name(&j->moves_tab, to)) : NULL;
        if (a)
            rsched_add_work(&a->rs, 0, 1, C.now);
        if (b)
            rsched_add_work(&b->rs, 1, 0, C.now);
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
        ctrl_node *cn = find_node(nametab_name(tab, i));
        pe[i] = (plan_events_node){.state = cn ? cn->h.state : NODE_UNKNOWN,
                                   .known = cn != NULL,
                                   .reason = cn ? cn->v.last_failure_reason : ""};
    }
    kg_event *evs = NULL;
    int k = plan_events(moves, n, tab, pe, truncated, duration_ms, &evs);
    for (int i = 0; i < k; i++) {
        if (evs[i].kind == EV_FAILOVER)
            C.failovers_total++;
        else if (evs[i].kind == EV_REVERT)
            C.reverts_total++;
        else if (evs[i].kind == EV_ADOPTION)
            C.adoptions_total++;
        record_event(&evs[i]);
    }
    free(evs);
    free(pe);
}

static int64_t min_due(int64_t a, int64_t b) { return (b > 0 && b < a) ? b : a; }

/* Plans on the current monitor set and hands the (paced) moves to the database. */
static void converge(void)
{
    if (!C.leader || !C.db_ok || !C.mon.loaded || !db_idle() || C.reb.running)
        return;
    /* a state change asks for monitors read after it (rows Kuma changed meanwhile count) */
    if (C.need_converge && C.mon.as_of_ms < C.converge_epoch) {
        C.want_monitors = true;
        return;
    }
    if (C.need_converge || C.now >= C.next_converge_ms) {
        C.next_converge_ms = C.now + C.cfg->refresh_interval_ms;
    } else {
        return;
    }
    C.need_converge = false;
    /* wake up when a recovered node's hold-down ends, not a refresh interval later */
    for (int i = 0; i < C.n_nodes; i++) {
        int64_t proven = health_proven_since(&C.nodes[i].h);
        int64_t end = proven + C.cfg->recovery_hold_down_ms;
        if (proven && end > C.now)
            C.next_converge_ms = min_due(C.next_converge_ms, end);
    }
    int64_t t0 = kg_mono_ms();
    int n_nodes = 0;
    plan_node *pn = build_plan_nodes(&C.mon.tab, &n_nodes);
    if (!pn)
        return;
    plan_view v = {.nodes = pn, .n_nodes = n_nodes, .monitors = C.mon.rows.monitors,
                   .n_monitors = C.mon.rows.n};
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
    if (r.n_no_target)
        log_warn("%d monitors need a node but none is online and proven; will retry",
                 r.n_no_target);
    if (r.n_moves == 0)
        goto out;
    size_t planned = r.n_moves;
    size_t kept = pace_moves(r.moves, r.n_moves, &C.mon.tab);
    if (kept < planned) {
        log_info("converge: %zu of %zu moves now, the rest when the nodes can start them "
                 "before their cron", kept, planned);
        C.next_converge_ms = min_due(C.next_converge_ms, C.now + 1000);
    }
    if (kept == 0)
        goto out;
    db_job *j = build_job(r.moves, kept, &C.mon.tab, "converge");
    if (!j)
        goto out;
    r.moves = NULL; /* the job owns them now */
    if (!submit_job(j)) {
        db_job_free(j);
        goto out;
    }
    C.applying = APPLY_CONVERGE;
    int64_t dur = kg_mono_ms() - t0;
    converge_events(j->moves, j->n_moves, &j->moves_tab,
                    r.reverts_truncated || kept < planned, dur);
    if (r.n_over_capacity)
        emit(EV_CAPACITY_WARNING, NULL, "", "", r.n_over_capacity, 0,
             "%d monitors placed on nodes already at MONITOR_LIMIT_PER_NODE=%d: running over "
             "the limit beats not running", r.n_over_capacity, C.cfg->monitor_limit);
    if (r.n_revert) {
        C.next_revert_ms = C.now + C.cfg->revert_batch_interval_ms;
        if (r.reverts_truncated)
            C.next_converge_ms = min_due(C.next_converge_ms, C.next_revert_ms);
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

static void reb_clear(void)
{
    free(C.reb.moves);
    nametab_free(&C.reb.tab);
    memset(&C.reb, 0, sizeof C.reb);
}

static void reb_finish(const char *phase, const char *error)
{
    snprintf(C.reb_view.phase, sizeof C.reb_view.phase, "%s", phase);
    C.reb_view.running = false;
    C.reb_view.finished_ms = C.wall;
    C.reb_view.moved = (int)C.reb.applied;
    snprintf(C.reb_view.last_error, sizeof C.reb_view.last_error, "%s", error ? error : "");
    C.rebalances_total++;
    emit(C.reb.kind, NULL, "", "", (int)C.reb.applied, C.wall - C.reb.started_wall_ms,
         "%s %s by %s: %zu of %zu home changes applied, %zu skipped (changed meanwhile)%s%s",
         C.reb.kind == EV_FORCE_REBALANCE ? "force rebalance" : "rebalance", phase, C.reb.actor,
         C.reb.applied, C.reb.n, C.reb.skipped, error ? ": " : "", error ? error : "");
    reb_clear();
    C.dirty = true;
}

static void reb_request(kg_event_kind kind, const char *actor, kg_reply *reply)
{
    if (C.reb.running || C.reb_req.pending) {
        reply_finish(reply, 409, "busy", "a rebalance is already running; cancel it first");
        return;
    }
    if (!C.leader) {
        reply_finish(reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    if (C.panic.engaged) {
        reply_finish(reply, 409, "panic", C.panic.reason);
        return;
    }
    if (!C.db_ok) {
        reply_finish(reply, 503, "database_unavailable", C.db_error);
        return;
    }
    int unproven = 0;
    for (int i = 0; i < C.n_nodes; i++)
        if (node_state_placeable(C.nodes[i].h.state) && !C.nodes[i].h.proven &&
            C.nodes[i].v.host_valid)
            unproven++;
    if (unproven) {
        /* a plan without them would pile their share onto the others */
        char detail[160];
        snprintf(detail, sizeof detail,
                 "%d node(s) have not passed %d probes since kumaguard started; retry shortly",
                 unproven, C.cfg->rise);
        reply_finish(reply, 409, "nodes_unproven", detail);
        return;
    }
    C.reb_req = (rebalance_request){.pending = true, .kind = kind, .reply = reply,
                                    .asked_ms = C.now};
    snprintf(C.reb_req.actor, sizeof C.reb_req.actor, "%s", actor && actor[0] ? actor : "api");
    if (reply) {
        pthread_mutex_lock(&reply->lock);
        reply->refs++; /* kept until the plan is made */
        pthread_mutex_unlock(&reply->lock);
    }
    C.want_monitors = true;
}

/* The monitors were re-read for a requested rebalance: plan it and start. */
static void reb_plan(void)
{
    rebalance_request q = C.reb_req;
    memset(&C.reb_req, 0, sizeof C.reb_req);
    int n_nodes = 0;
    plan_node *pn = build_plan_nodes(&C.mon.tab, &n_nodes);
    plan_view v = {.nodes = pn, .n_nodes = n_nodes, .monitors = C.mon.rows.monitors,
                   .n_monitors = C.mon.rows.n};
    plan_options o;
    plan_options_default(&o);
    o.tolerance = C.cfg->balance_tolerance;
    plan_result r;
    plan_result_init(&r);
    int rc = pn ? (q.kind == EV_FORCE_REBALANCE ? plan_force_all(&v, &o, &r)
                                                : plan_rebalance(&v, &o, &r))
                : -1;
    free(pn);
    if (rc != 0) {
        plan_result_free(&r);
        reply_finish(q.reply, 500, "planner_failed", "out of memory");
        reply_put(q.reply);
        return;
    }
    if (r.n_moves == 0) {
        plan_result_free(&r);
        if (!q.reply) {
            /* automatic attempt that cannot improve anything (pins, limits): no event, and
             * wait longer before the next attempt */
            C.next_auto_rebalance_ms = C.now + 10 * 60000;
            return;
        }
        C.reb = (rebalance_op){.kind = q.kind, .started_ms = C.now, .started_wall_ms = C.wall};
        snprintf(C.reb.actor, sizeof C.reb.actor, "%s", q.actor);
        snprintf(C.reb_view.operation, sizeof C.reb_view.operation, "%s",
                 q.kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance");
        C.reb_view.started_ms = C.wall;
        C.reb_view.total = 0;
        reb_finish("done", NULL);
        reply_finish(q.reply, 200, "", "already balanced: nothing to move");
        reply_put(q.reply);
        return;
    }
    C.reb = (rebalance_op){.running = true, .kind = q.kind, .moves = r.moves, .n = r.n_moves,
                           .started_ms = C.now, .next_batch_ms = C.now,
                           .started_wall_ms = C.wall};
    if (nametab_copy(&C.reb.tab, &C.mon.tab) != 0) {
        r.moves = NULL;
        reb_clear();
        plan_result_free(&r);
        reply_finish(q.reply, 500, "planner_failed", "out of memory");
        reply_put(q.reply);
        return;
    }
    snprintf(C.reb.actor, sizeof C.reb.actor, "%s", q.actor);
    r.moves = NULL; /* ownership moved to the operation */
    plan_result_free(&r);
    snprintf(C.reb_view.operation, sizeof C.reb_view.operation, "%s",
             q.kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance");
    C.reb_view.started_ms = C.wall;
    C.reb_view.total = (int)C.reb.n;
    C.reb_view.moved = 0;
    C.reb_view.eta_ms = 0;
    C.reb_view.finished_ms = 0;
    C.reb_view.last_error[0] = 0;
    C.reb_view.running = true;
    snprintf(C.reb_view.phase, sizeof C.reb_view.phase, "applying");
    C.dirty = true;
    char detail[200];
    snprintf(detail, sizeof detail, "%zu home changes planned", C.reb.n);
    reply_finish(q.reply, 202, "", detail);
    reply_put(q.reply);
}

static void reb_step(void)
{
    if (!C.reb.running || C.now < C.reb.next_batch_ms || C.applying != APPLY_NONE)
        return;
    if (!C.leader || C.panic.engaged) {
        reb_finish("cancelled", C.panic.engaged ? "panic guard engaged" : "no longer the leader");
        return;
    }
    if (!db_idle())
        return;
    if (C.reb.done >= C.reb.n) {
        reb_finish("done", NULL);
        return;
    }
    size_t batch = (size_t)C.cfg->move_batch_size;
    size_t n = C.reb.n - C.reb.done < batch ? C.reb.n - C.reb.done : batch;
    for (size_t i = C.reb.done; i < C.reb.done + n; i++) {
        ctrl_node *cn = find_node(nametab_name(&C.reb.tab, C.reb.moves[i].to));
        if (!cn || !health_placeable(&cn->h)) {
            /* the plan is stale: a target left since it was made */
            C.need_converge = true;
            C.converge_epoch = C.now;
            reb_finish("cancelled", "a target node is no longer online; plan again");
            return;
        }
    }
    plan_move *batch_moves = malloc(n * sizeof *batch_moves);
    if (!batch_moves)
        return;
    memcpy(batch_moves, C.reb.moves + C.reb.done, n * sizeof *batch_moves);
    size_t kept = pace_moves(batch_moves, n, &C.reb.tab);
    if (kept == 0) {
        free(batch_moves);
        C.reb.next_batch_ms = C.now + 1000; /* the nodes are busy: wait for room */
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
        for (size_t i = C.reb.done; i < C.reb.done + n; i++) {
            bool sent = false;
            for (size_t k = 0; k < kept && !sent; k++)
                sent = batch_moves[k].monitor_id == C.reb.moves[i].monitor_id;
            if (!sent)
                rest[r++] = C.reb.moves[i];
        }
        memcpy(C.reb.moves + C.reb.done, batch_moves, kept * sizeof *batch_moves);
        memcpy(C.reb.moves + C.reb.done + kept, rest, r * sizeof *rest);
        free(rest);
    }
    const char *what = C.reb.kind == EV_FORCE_REBALANCE ? "force-rebalance" : "rebalance";
    db_job *j = build_job(batch_moves, kept, &C.reb.tab, what);
    if (!j) {
        free(batch_moves);
        return;
    }
    if (!submit_job(j)) {
        db_job_free(j);
        return;
    }
    C.applying = APPLY_REBALANCE;
}

/* Called from on_db_done (via applied_moves' caller) for a rebalance batch. */
static void reb_batch_done(const db_job *j)
{
    if (!j->moves_done)
        return;
    C.reb.done += j->n_moves;
    C.reb.applied += j->applied.applied;
    C.reb.skipped += j->applied.skipped;
    C.reb_view.moved = (int)C.reb.done;
    int64_t elapsed = C.now - C.reb.started_ms;
    if (C.reb.done > 0)
        C.reb_view.eta_ms = C.reb.started_wall_ms +
                            (int64_t)((double)elapsed * (double)C.reb.n / (double)C.reb.done);
    C.reb.next_batch_ms = C.now + C.cfg->move_batch_interval_ms;
    C.dirty = true;
    if (C.reb.done >= C.reb.n)
        reb_finish("done", NULL);
}

static void maybe_auto_rebalance(void)
{
    /* checked on every fresh monitor set; at most one automatic rebalance a minute */
    if (C.cfg->auto_rebalance_spread <= 0 || C.now < C.next_auto_rebalance_ms || C.reb.running ||
        C.reb_req.pending || !C.leader || C.panic.engaged || !C.db_ok || !C.mon.loaded ||
        C.mon.as_of_ms <= C.auto_checked_ms || proving())
        return;
    C.auto_checked_ms = C.mon.as_of_ms;
    int *load = calloc((size_t)C.mon.tab.n + 1, sizeof *load);
    int *nl = calloc((size_t)C.n_nodes + 1, sizeof *nl);
    node_state *ns = calloc((size_t)C.n_nodes + 1, sizeof *ns);
    if (load && nl && ns) {
        plan_view v = {.n_nodes = C.mon.tab.n, .monitors = C.mon.rows.monitors,
                       .n_monitors = C.mon.rows.n};
        plan_count_load(&v, load);
        for (int i = 0; i < C.n_nodes; i++) {
            int32_t idx = nametab_find(&C.mon.tab, C.nodes[i].v.id, strlen(C.nodes[i].v.id));
            nl[i] = idx >= 0 ? load[idx] : 0;
            ns[i] = C.nodes[i].h.proven || !node_state_placeable(C.nodes[i].h.state)
                        ? C.nodes[i].h.state
                        : NODE_RECOVERING; /* unproven: not settled */
        }
        double spread = 0;
        if (policy_auto_rebalance(nl, ns, C.n_nodes, C.cfg->auto_rebalance_spread, &spread)) {
            C.next_auto_rebalance_ms = C.now + 60000;
            log_info("load spread %.2f exceeds REBALANCE_AUTO_SPREAD=%.2f: rebalancing", spread,
                     C.cfg->auto_rebalance_spread);
            reb_request(EV_REBALANCE, "auto (load spread)", NULL);
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
    health_params p = {.fall = C.cfg->fall, .rise = C.cfg->rise};
    on_transition(cn, health_release_hold(&cn->h, &p, C.now),
                  "told to drop what moved away while it was failing");
}

static void on_reconcile_done(const kg_msg *m)
{
    ctrl_node *cn = find_node(m->node);
    if (!cn)
        return;
    rsched_result r = (rsched_result)m->status;
    rsched_finish(&cn->rs, &C.rcfg, r, m->http_status, C.now, C.wall - C.now);
    C.reconcile_calls++;
    C.dirty = true;
    if (r != RS_OK) {
        C.reconcile_failures++;
        log_warn("reconcile call to %s: %s (%s)", cn->v.id, rsched_result_name(r), m->text);
        /* refusals say their cause and fix once per streak, not once per call */
        if (cn->rs.failures == 1 || r == RS_RATE_LIMITED || r == RS_UNAUTHORIZED ||
            r == RS_TIMEOUT)
            emit(EV_RECONCILE_FAILED, cn->v.id, "", rsched_result_name(r), 0, (int64_t)m->value,
                 "reconcile call to %s: %s%s%s", cn->v.id, reconcile_cause(r),
                 m->text[0] ? " — " : "", m->text);
    }
    release_if_told(cn);
}

/* Starts the reconcile calls the scheduler allows; returns when to look again. */
static int64_t schedule_calls(void)
{
    int64_t due = 0;
    int64_t off = C.wall - C.now;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        rsched_decision d = rsched_next(&cn->rs, &C.rcfg, node_callable(cn), cn->alive_since_ms,
                                        C.now, off);
        if (d.call) {
            if (reconcile_worker_call(cn->v.id, cn->v.host, d.deadline_ms) != 0)
                rsched_finish(&cn->rs, &C.rcfg, RS_CONNECT_FAILED, 0, C.now, off);
            C.dirty = true;
        } else if (d.wake_ms > C.now && (due == 0 || d.wake_ms < due)) {
            due = d.wake_ms;
        }
        release_if_told(cn);
    }
    return due;
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
        C.lat_buckets[b]++;
        C.lat_sum += r->latency_ms;
        C.lat_count++;
    }
}

static void update_panic(void)
{
    panic_node *pv = calloc((size_t)(C.n_nodes ? C.n_nodes : 1), sizeof *pv);
    if (!pv)
        return;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        pv[i] = (panic_node){.counted = health_probed(&cn->h) && cn->v.host_valid,
                             .failing = cn->h.consecutive_failures > 0 ||
                                        cn->h.state == NODE_OFFLINE,
                             .fail_start_ms = cn->fail_start_ms,
                             .last_probe_ms = cn->last_probe_ms,
                             .id = cn->v.id};
    }
    int released = C.panic.released;
    panic_change ch = panic_update(&C.panic, &C.pcfg, pv, C.n_nodes, C.now);
    if (ch == PANIC_ENGAGED) {
        log_error("PANIC GUARD: %s", C.panic.reason);
        emit(EV_PANIC, NULL, "normal", "panic", C.panic.failing, 0, "%s", C.panic.reason);
        if (C.reb.running)
            reb_finish("cancelled", "panic guard engaged");
    } else if (ch == PANIC_RELEASED) {
        log_warn("panic guard %s", C.panic.reason);
        emit(EV_PANIC, NULL, "panic", "normal", C.panic.failing, 0, "panic guard %s",
             C.panic.reason);
        C.need_converge = true;
        C.converge_epoch = C.now;
    } else if (C.panic.released > released) {
        emit(EV_PANIC, NULL, "panic", "panic", C.panic.failing, 0,
             "panic guard held %d s: the monitors of failing node %d of %d may move now "
             "(KUMAGUARD_PANIC_MAX_HOLD)", C.cfg->panic_max_hold_ms / 1000, C.panic.released,
             C.panic.failing);
        C.need_converge = true;
        C.converge_epoch = C.now;
    }
    if (ch != PANIC_UNCHANGED)
        C.dirty = true;
    free(pv);
}

/* After a start (or when a node registers), nodes that say they are online are proven by
 * `rise` probes first — a few fast intervals.  Plans wait for that, so adoption and failover
 * spread over every live node instead of the few proven first. */
static bool proving(void)
{
    for (int i = 0; i < C.n_nodes; i++) {
        const ctrl_node *cn = &C.nodes[i];
        if (node_state_placeable(cn->h.state) && !cn->h.proven && cn->v.host_valid)
            return true;
    }
    return false;
}

/* Moves wait for the confirmation round and obey the panic guard. */
static bool moves_allowed(void)
{
    panic_node *pv = calloc((size_t)(C.n_nodes ? C.n_nodes : 1), sizeof *pv);
    if (!pv)
        return false;
    for (int i = 0; i < C.n_nodes; i++)
        pv[i] = (panic_node){.counted = health_probed(&C.nodes[i].h) && C.nodes[i].v.host_valid,
                             .last_probe_ms = C.nodes[i].last_probe_ms};
    bool pending = panic_confirm_pending(&C.panic, &C.pcfg, pv, C.n_nodes, C.now);
    free(pv);
    return !pending && panic_moves_allowed(&C.panic, C.now);
}

static void on_probe(const kg_msg *m)
{
    ctrl_node *cn = find_node(m->node);
    if (!cn)
        return;
    const probe_result *r = &m->probe;
    bool ok = r->outcome == PROBE_OK;
    cn->last_probe_ms = C.now;
    cn->v.last_probe_ms = C.wall;
    cn->v.probes_total++;
    cn->v.http_status = r->http_status;
    cn->v.last_latency_ms = r->latency_ms;
    record_latency(cn, r);
    if (ok) {
        cn->v.last_seen_ms = C.wall;
        cn->fail_start_ms = 0;
        if (!cn->alive_since_ms)
            cn->alive_since_ms = C.now;
    } else {
        cn->v.probes_failed++;
        cn->v.last_failure_ms = C.wall;
        snprintf(cn->v.last_failure_reason, sizeof cn->v.last_failure_reason, "%s", r->reason);
        if (cn->h.consecutive_failures == 0)
            cn->fail_start_ms = C.now;
        cn->alive_since_ms = 0;
    }
    health_params p = {.fall = C.cfg->fall, .rise = C.cfg->rise,
                       .hold_online = C.cfg->kuma_api_key && rsched_must_tell(&cn->rs)};
    bool was_proven = cn->h.proven;
    health_transition t = health_apply(&cn->h, &p, ok, C.now);
    cn->v.consecutive_failures = cn->h.consecutive_failures;
    cn->v.consecutive_successes = cn->h.consecutive_successes;
    C.dirty = true;
    on_transition(cn, t, ok ? "probe ok" : r->reason);
    if (cn->h.proven && !was_proven && !t.changed) {
        /* proven after a start: it may receive monitors now */
        log_info("node %s proven by %d probes", cn->v.id, C.cfg->rise);
        C.need_converge = true;
        C.converge_epoch = C.now;
    }
}

/* ==========================================================================================
 * Operator actions
 * ========================================================================================== */

static void on_node_action(const kg_msg *m, node_state target)
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
    health_transition t = health_set_operator(&cn->h, target, C.now);
    cn->v.prev_state = before;
    cn->v.state = cn->h.state;
    cn->v.state_since_ms = C.wall;
    cn->v.consecutive_failures = cn->v.consecutive_successes = 0;
    C.need_converge = true;
    C.converge_epoch = C.now;
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

static void on_panic_override(const kg_msg *m)
{
    if (!C.leader) {
        reply_finish(m->reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    const char *actor = m->actor[0] ? m->actor : "operator";
    if (!panic_override(&C.panic, actor)) {
        reply_finish(m->reply, 409, "not_engaged", "the panic guard is not engaged");
        return;
    }
    emit(EV_PANIC, NULL, "panic", "override", C.panic.failing, 0,
         "%s allowed failover while %d of %d nodes fail (for this outage)", actor,
         C.panic.failing, C.panic.total);
    C.need_converge = true;
    C.converge_epoch = C.now;
    C.dirty = true;
    reply_finish(m->reply, 200, "", "failover allowed for this outage");
}

/* An operator's move / pin / unpin: queued for the database applier, which reads, validates
 * and writes it (monitor_ops.c, fenced, all or nothing); the answer comes with the job. */
static void on_monitor_op(kg_msg *m)
{
    if (!C.leader) {
        reply_finish(m->reply, 409, "not_leader", "another kumaguard instance holds the lease");
        return;
    }
    if (!C.db_ok) {
        reply_finish(m->reply, 503, "database_unavailable", C.db_error);
        return;
    }
    if (C.n_monitor_ops == MONITOR_OPS_QUEUED || !m->data) {
        reply_finish(m->reply, 503, "busy", "too many monitor operations waiting; retry shortly");
        return;
    }
    queued_monitor_op *q = &C.monitor_ops[C.n_monitor_ops++];
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
    if (!C.n_monitor_ops || !db_idle() || C.applying != APPLY_NONE)
        return;
    queued_monitor_op q = C.monitor_ops[0];
    if (!C.leader) {
        reply_finish(q.reply, 409, "not_leader", "another kumaguard instance holds the lease");
    } else {
        db_job *j = build_job(NULL, 0, NULL, "");
        if (!j)
            return;
        j->monitor_op = q.req;
        snprintf(j->actor, sizeof j->actor, "%s", q.actor);
        if (!submit_job(j)) {
            j->monitor_op = NULL; /* still queued */
            db_job_free(j);
            return;
        }
        q.req = NULL;
        C.applying = APPLY_MONITOR_OP;
        C.monitor_op_reply = q.reply;
        q.reply = NULL;
    }
    free(q.req);
    reply_put(q.reply);
    memmove(C.monitor_ops, C.monitor_ops + 1, sizeof C.monitor_ops[0] * (size_t)--C.n_monitor_ops);
}

/* The applier ran an operator's monitor operation: answer, record, tell the nodes. */
static void monitor_op_done(const db_job *j)
{
    kg_reply *reply = C.monitor_op_reply;
    C.monitor_op_reply = NULL;
    const monitor_ops_outcome *o = &j->monitor_op_outcome;
    if (!j->monitor_op_done) {
        reply_finish(reply, j->rc == STORE_FENCED ? 409 : 503,
                     j->rc == STORE_FENCED ? "not_leader" : "database_unavailable",
                     j->error[0] ? j->error : C.db_error);
        reply_put(reply);
        return;
    }
    if (o->changed > 0) {
        emit(EV_MONITOR, o->ev_node, o->ev_from, o->ev_to, (int)o->changed,
             j->finished_mono_ms - j->started_mono_ms, "%s", o->ev_reason);
        for (int i = 0; i < o->n_touched; i++) {
            ctrl_node *cn = find_node(o->touched[i]);
            if (cn) /* the exact split is not known here: count each as a start (a longer
                     * deadline is the safe side) */
                rsched_add_work(&cn->rs, (int)(o->changed < 100 ? o->changed : 100), 0, C.now);
        }
        C.want_monitors = true; /* our set no longer matches the table */
        C.need_converge = true;
        C.converge_epoch = C.now;
    }
    reply_finish_count(reply, o->v.status, o->v.error, o->v.detail, (int64_t)o->changed);
    reply_put(reply);
}

static void handle(kg_msg *m)
{
    switch (m->kind) {
    case MSG_PROBE_RESULT:
        on_probe(m);
        break;
    case MSG_TRIGGER_HEALTH_CHECK:
        prober_trigger_all();
        emit(EV_OPERATOR, NULL, "", "", 0, 0, "%s triggered a health check of every node",
             m->actor[0] ? m->actor : "operator");
        reply_finish(m->reply, 202, "", "probing every node now");
        break;
    case MSG_UPDATE_LOADS:
        if (C.n_load_waiters == LOAD_WAITERS_MAX) {
            reply_finish(m->reply, 503, "busy", "too many monitor reads asked for at once");
            break;
        }
        if (m->reply) {
            pthread_mutex_lock(&m->reply->lock);
            m->reply->refs++;
            pthread_mutex_unlock(&m->reply->lock);
            C.load_waiters[C.n_load_waiters++] = m->reply;
        }
        C.want_monitors = true;
        break;
    case MSG_TRIGGER_REBALANCE:
        reb_request(EV_REBALANCE, m->actor, m->reply);
        break;
    case MSG_FORCE_REBALANCE_ALL:
        reb_request(EV_FORCE_REBALANCE, m->actor, m->reply);
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
        C.dirty = true;
        if (m->text[0])
            emit(EV_SETUP, m->node, "", "", 0, 0, "%s", m->text);
        break;
    case MSG_NGINX_OUTCOME:
        if (m->flag)
            emit(EV_NGINX_RELOAD, NULL, "", "", 0, (int64_t)m->value,
                 "nginx reloaded with the new upstream");
        else
            emit(EV_NGINX_FAILED, NULL, "", "", 0, (int64_t)m->value,
                 "nginx validation/reload failed, kept the last good file: %.150s", m->text);
        break;
    case MSG_DB_DONE: {
        db_job *j = m->data;
        apply_kind applying = C.applying;
        on_db_done(j);
        if (applying == APPLY_REBALANCE)
            reb_batch_done(j);
        else if (applying == APPLY_MONITOR_OP)
            monitor_op_done(j);
        break;
    }
    case MSG_RECONCILE_DONE:
        on_reconcile_done(m);
        break;
    case MSG_SHUTDOWN:
        reply_finish(m->reply, 200, "", "stopping");
        break;
    }
}

/* ==========================================================================================
 * Snapshot
 * ========================================================================================== */

static void count_monitors(kg_snapshot *s)
{
    int nn = C.mon.tab.n;
    int *eff = calloc((size_t)nn + 1, sizeof *eff);
    int *home = calloc((size_t)nn + 1, sizeof *home);
    int *pinned = calloc((size_t)nn + 1, sizeof *pinned);
    bool *routable = calloc((size_t)nn + 1, sizeof *routable);
    if (!eff || !home || !pinned || !routable)
        goto out;
    for (int i = 0; i < nn; i++) {
        ctrl_node *cn = find_node(nametab_name(&C.mon.tab, i));
        routable[i] = cn && node_state_routable(cn->h.state);
    }
    for (size_t i = 0; i < C.mon.rows.n; i++) {
        const plan_monitor *m = &C.mon.rows.monitors[i];
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
        if (!routable[e])
            s->monitors_stranded++;
    }
    for (int i = 0; i < s->n_nodes; i++) {
        int32_t idx = nametab_find(&C.mon.tab, s->nodes[i].id, strlen(s->nodes[i].id));
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
    free(routable);
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
        .last_call_ms = to_wall(rs->last_call_ms),
        .last_duration_ms = rs->last_duration_ms,
        .next_cron_ms = to_wall(rsched_next_cron_ms(&C.rcfg, C.now, C.wall - C.now)),
        .waiting = rs->waiting,
        .calls = rs->calls,
        .failures = rs->failures,
        .timeouts = rs->timeouts,
        .rate_limited = rs->rate_limited,
        .unauthorized = rs->unauthorized,
        .left_to_cron = rs->left_to_cron,
    };
}

static void publish(void)
{
    kg_snapshot *s = snapshot_new(C.n_nodes);
    if (!s) {
        log_error("out of memory building a snapshot");
        return;
    }
    s->built_ms = C.wall;
    s->started_ms = C.started_wall_ms;
    for (int i = 0; i < C.n_nodes; i++) {
        ctrl_node *cn = &C.nodes[i];
        cn->v.state = cn->h.state;
        cn->v.proven = cn->h.proven;
        cn->v.fast_probe = health_in_transition(&cn->h);
        reconcile_view(cn, &cn->v.reconcile);
        s->nodes[i] = cn->v;
        if (node_state_placeable(cn->h.state))
            s->nodes_online++;
    }
    count_monitors(s);
    s->monitors_refreshed_ms = C.mon.wall_ms;
    s->monitor_limit = C.cfg->monitor_limit;
    s->db_ok = C.db_ok;
    snprintf(s->db_backend, sizeof s->db_backend, "%s", C.cfg->db_host ? "mariadb" : "sqlite");
    snprintf(s->db_error, sizeof s->db_error, "%s", C.db_error);
    s->db_errors_total = C.db_errors_total;
    s->db_state = C.db_state ? C.db_state : "connecting";
    s->db_down_since_ms = C.db_down_since_wall;
    s->db_last_ok_ms = C.db_last_ok_wall;
    s->db_next_retry_ms = !C.db_ok && C.db_next_try_ms > C.now ? to_wall(C.db_next_try_ms) : 0;
    events_health_t hh;
    events_health(&hh);
    s->history_failing = !hh.ok;
    snprintf(s->history_error, sizeof s->history_error, "%s", hh.ok ? "" : hh.error);
    s->history_lost = hh.lost;
    s->is_leader = C.leader;
    s->leader_generation = C.generation;
    snprintf(s->instance_id, sizeof s->instance_id, "%s", C.cfg->instance_id);
    s->panic = C.panic.engaged;
    snprintf(s->panic_reason, sizeof s->panic_reason, "%s",
             C.panic.engaged ? C.panic.reason : "");
    s->panic_since_ms = C.panic.engaged ? to_wall(C.panic.engaged_ms) : 0;
    s->panic_override = C.panic.override;
    snprintf(s->panic_override_by, sizeof s->panic_override_by, "%s", C.panic.override_by);
    s->panic_failing = C.panic.failing;
    s->panic_total = C.panic.total;
    s->panic_released = C.panic.released;
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

    /* nginx follows the nodes (frozen while the panic guard holds), on its own thread; before
     * the cluster's first user exists, only the primary node is routed (setup_watch.h) */
    setup_watch_fill(s);
    setup_gate_submit(s, panic_freezes_routing(&C.panic));
    nginx_worker_status(&s->nginx);
    snapshot_publish(s);
    C.dirty = false;
}

/* ==========================================================================================
 * The loop
 * ========================================================================================== */

/* One pass over the timers and decisions after the inbox was emptied. */
static int64_t step(void)
{
    refresh_clocks();
    check_history();
    db_watchdog();
    check_lease_expiry();
    if (C.now >= C.next_refresh_ms) {
        C.next_refresh_ms = C.now + C.cfg->refresh_interval_ms;
        C.want_nodes = C.want_monitors = true;
    }
    update_panic(); /* after the burst of probe results, before any move */
    submit_monitor_op(); /* an operator asked: before the next plan */
    if (moves_allowed() && !proving())
        converge();
    if (C.reb.running)
        reb_step();
    else
        maybe_auto_rebalance();
    maybe_submit();
    int64_t due = C.now + 1000;
    due = min_due(due, C.next_refresh_ms);
    due = min_due(due, C.cfg->db_host ? C.next_lease_ms : 0);
    due = min_due(due, C.next_converge_ms);
    due = min_due(due, C.db_busy ? C.db_job_started + C.cfg->db_timeout_ms + 260 : 0);
    due = min_due(due, !C.db_busy && C.db_next_try_ms > C.now ? C.db_next_try_ms : 0);
    due = min_due(due, C.leader && C.cfg->db_host ? C.lease.valid_until_ms : 0);
    due = min_due(due, panic_next_due(&C.panic, &C.pcfg, C.now));
    if (C.reb.running)
        due = min_due(due, C.reb.next_batch_ms);
    due = min_due(due, schedule_calls());
    if (C.dirty)
        publish();
    return due;
}

/* Waits (bounded) for the running database job and handles its result. */
static void wait_db_idle(int64_t deadline)
{
    while (C.db_busy && kg_mono_ms() < deadline) {
        kg_msg *m = mailbox_wait(100);
        refresh_clocks();
        if (m && m->kind == MSG_DB_DONE)
            on_db_done(m->data);
        else if (m && m->reply)
            reply_finish(m->reply, 503, "shutting_down", "kumaguard is stopping");
        mailbox_free(m);
    }
}

/* A clean stop gives the lease up, so another controller takes over at once instead of after
 * the lease expires. */
static void release_lease_at_exit(void)
{
    if (!C.leader || !C.cfg->db_host)
        return;
    int64_t deadline = kg_mono_ms() + C.cfg->db_timeout_ms + 500;
    wait_db_idle(deadline);
    if (C.db_busy || !C.leader)
        return;
    db_job *j = db_job_new();
    if (!j)
        return;
    j->generation = C.generation;
    j->leader = true;
    j->release_lease = true;
    if (!submit_job(j)) {
        db_job_free(j);
        return;
    }
    wait_db_idle(deadline);
    if (!C.db_busy)
        set_role(false, C.generation, "stopping: lease released");
}

static void *controller_main(void *arg)
{
    (void)arg;
    refresh_clocks();
    C.want_nodes = C.want_monitors = true;
    C.next_refresh_ms = C.now + C.cfg->refresh_interval_ms;
    C.next_prune_ms = C.now;
    C.need_converge = true;
    C.converge_epoch = C.now;
    publish();
    bool stop = false;
    int64_t due = C.now;
    while (!stop) {
        int64_t wait = due - kg_mono_ms();
        kg_msg *m = mailbox_wait(wait < 0 ? 0 : (int)wait);
        /* take everything already queued before deciding, so a burst of probe results causes
         * one convergence and one snapshot */
        int handled = 0;
        while (m) {
            refresh_clocks();
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
    C.pcfg = (panic_cfg){.share = cfg->panic_share,
                         .rise = cfg->rise,
                         .interval_ms = cfg->health_interval_ms,
                         .timeout_ms = cfg->health_timeout_ms,
                         .max_hold_ms = cfg->panic_max_hold_ms,
                         .release_interval_ms = cfg->panic_release_interval_ms};
    panic_init(&C.panic);
    rsched_cfg_default(&C.rcfg);
    C.rcfg.base_ms = cfg->reconcile_base_ms;
    C.rcfg.start_ms = cfg->reconcile_start_ms;
    C.rcfg.stop_ms = cfg->reconcile_stop_ms;
    C.rcfg.timeout_max_ms = cfg->reconcile_timeout_max_ms;
    C.rcfg.cron_skew_ms = cfg->kuma_cron_skew_ms;
    C.rcfg.budget = cfg->reconcile_budget;
}

int controller_start(const kg_config *cfg, char *err, size_t errlen)
{
    memset(&C, 0, sizeof C);
    C.cfg = cfg;
    refresh_clocks();
    C.started_ms = C.now;
    C.started_wall_ms = C.wall;
    C.rng = (uint32_t)(C.now ^ (int64_t)getpid() << 16) | 1;
    C.history_ok = true;
    C.static_dirty = cfg->n_static_nodes > 0;
    setup_deciders(cfg);
    nametab_init(&C.mon.tab);
    if (events_open(cfg->state_dir, err, errlen) != 0)
        return -1;
    C.n_recent = events_load_recent(C.recent, KG_RECENT_EVENTS);
    kg_nginx_feed *feed = nginx_feed_new(cfg, err, errlen);
    if (!feed || nginx_worker_start(feed, err, errlen) != 0)
        goto fail_events;
    if (db_worker_start(cfg, err, errlen) != 0)
        goto fail_nginx;
    if (reconcile_worker_start(cfg, err, errlen) != 0)
        goto fail_db;
    for (int i = 0; i < cfg->n_static_nodes; i++)
        add_node(cfg->static_nodes[i].id, cfg->static_nodes[i].id, cfg->static_nodes[i].host,
                 NODE_ONLINE);
    if (pthread_create(&C.thread, NULL, controller_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the controller thread: %s", strerror(errno));
        reconcile_worker_stop();
        goto fail_db;
    }
    C.started = true;
    return 0;
fail_db:
    db_worker_stop();
fail_nginx:
    nginx_worker_stop();
fail_events:
    events_close();
    free(C.nodes);
    C.nodes = NULL;
    nametab_free(&C.mon.tab);
    return -1;
}

void controller_stop(void)
{
    if (!C.started)
        return;
    kg_msg m = {.kind = MSG_SHUTDOWN};
    mailbox_post(&m);
    pthread_join(C.thread, NULL);
    /* the appliers next: what they still post meets a closed mailbox */
    mailbox_shutdown();
    reconcile_worker_stop();
    db_worker_stop();
    nginx_worker_stop();
    mailbox_drain();
    finish_load_waiters(503, "shutting_down", "kumaguard is stopping");
    for (int i = 0; i < C.n_monitor_ops; i++) {
        reply_finish(C.monitor_ops[i].reply, 503, "shutting_down", "kumaguard is stopping");
        reply_put(C.monitor_ops[i].reply);
        free(C.monitor_ops[i].req);
    }
    if (C.monitor_op_reply) {
        reply_finish(C.monitor_op_reply, 503, "shutting_down", "kumaguard is stopping");
        reply_put(C.monitor_op_reply);
    }
    if (C.reb_req.pending) {
        reply_finish(C.reb_req.reply, 503, "shutting_down", "kumaguard is stopping");
        reply_put(C.reb_req.reply);
    }
    reb_clear();
    free(C.nodes);
    free(C.db_events);
    store_free_monitors(&C.mon.rows);
    nametab_free(&C.mon.tab);
    events_close();
    memset(&C, 0, sizeof C);
}
