/* monitor_ops.c — move, pin and unpin monitors on an operator's request (see monitor_ops.h for
 * the rules).
 *
 * Owns: planning a request against the monitors' rows (pure) and running it against the
 * store.  Must not: log, read the clock, or change anything but the monitors the request
 * names. */
#include "monitor_ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *monitor_op_name(monitor_op_kind k)
{
    switch (k) {
    case MONITOR_OP_MOVE: return "move";
    case MONITOR_OP_PIN: return "pin";
    case MONITOR_OP_UNPIN: return "unpin";
    }
    return "?";
}

static void verdict(monitor_ops_verdict *v, int status, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void verdict(monitor_ops_verdict *v, int status, const char *error, const char *fmt, ...)
{
    v->status = status;
    snprintf(v->error, sizeof v->error, "%s", error);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->detail, sizeof v->detail, fmt, ap);
    va_end(ap);
}

static const store_monitor_row *find_row(const store_monitor_row *rows, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (rows[i].id == id)
            return &rows[i];
    return NULL;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Target of a move or pin: it must exist, take monitors now and be reachable. */
static bool target_ok(const monitor_op_request *req, const kg_node_view *nodes, int n_nodes,
                      monitor_ops_verdict *v)
{
    const kg_node_view *t = NULL;
    for (int i = 0; i < n_nodes && !t; i++)
        if (strcmp(nodes[i].id, req->node) == 0)
            t = &nodes[i];
    if (!t) {
        verdict(v, 404, "unknown_node", "no node %s", req->node);
        return false;
    }
    if (!node_state_placeable(t->state)) {
        verdict(v, 409, "node_not_online", "node %s is %s: monitors go only to an online node",
                t->id, node_state_name(t->state));
        return false;
    }
    if (!t->host_valid) {
        verdict(v, 409, "node_not_online", "node %s has an invalid host and runs nothing we "
                "can reach", t->id);
        return false;
    }
    return true;
}

/* The change one monitor needs, or false when it is refused (v says why).  *needed = false
 * when the monitor is already in the asked state. */
static bool plan_one(const monitor_op_request *req, const store_monitor_row *r,
                     store_monitor_change *c, bool *needed, monitor_ops_verdict *v)
{
    const char *home = r->has_home ? r->home : NULL;
    const char *over = r->has_over ? r->over : NULL;
    bool pinned = over && !r->ours;
    *c = (store_monitor_change){.id = r->id, .expect_home = home, .expect_over = over,
                                .new_home = home, .new_over = over};
    if (req->kind != MONITOR_OP_UNPIN && !r->active) {
        verdict(v, 409, "monitor_inactive", "monitor %lld is not active (paused): nothing runs "
                "it, so it cannot be moved or pinned", (long long)r->id);
        return false;
    }
    switch (req->kind) {
    case MONITOR_OP_MOVE:
        if (pinned) {
            verdict(v, 409, "monitor_pinned", "monitor %lld is pinned to %s by an operator: "
                    "unpin it first", (long long)r->id, over);
            return false;
        }
        if (!req->revert) {             /* a new home; kumaguard's override goes */
            c->new_home = req->node;
            c->new_over = NULL;
            c->record = STORE_RECORD_DELETE;
        } else if (same(req->node, home)) { /* back home: just drop our override */
            c->new_over = NULL;
            c->record = STORE_RECORD_DELETE;
        } else {                        /* kumaguard's override, reverted like a failover */
            c->new_over = req->node;
            c->record = STORE_RECORD_SET;
        }
        *needed = !same(c->new_home, home) || !same(c->new_over, over) ||
                  (c->record == STORE_RECORD_SET && !r->ours);
        return true;
    case MONITOR_OP_PIN:
        c->new_over = req->node;
        c->record = STORE_RECORD_DELETE; /* a pin is the operator's, never kumaguard's */
        *needed = !same(over, req->node) || r->ours;
        return true;
    case MONITOR_OP_UNPIN:
        if (!pinned) {
            verdict(v, 409, "not_pinned", "monitor %lld has no operator pin%s", (long long)r->id,
                    over ? " (its override is kumaguard's own failover target)" : "");
            return false;
        }
        c->new_over = NULL;
        c->record = STORE_RECORD_DELETE;
        *needed = true;
        return true;
    }
    return false;
}

long monitor_ops_plan(const monitor_op_request *req, const kg_node_view *nodes, int n_nodes,
                      const store_monitor_row *rows, size_t n_rows, store_monitor_change *changes,
                      monitor_ops_verdict *v)
{
    memset(v, 0, sizeof *v);
    if (req->n_ids == 0 || req->n_ids > MONITOR_OPS_MAX_BATCH) {
        verdict(v, 400, "bad_request", "between 1 and %d monitor ids", MONITOR_OPS_MAX_BATCH);
        return -1;
    }
    if (req->kind != MONITOR_OP_UNPIN && !target_ok(req, nodes, n_nodes, v))
        return -1;
    /* every unknown id first: a batch with a typo should name it whatever else is wrong */
    for (size_t i = 0; i < req->n_ids; i++) {
        if (!find_row(rows, n_rows, req->ids[i])) {
            verdict(v, 404, "unknown_monitor", "no monitor with id %lld", (long long)req->ids[i]);
            return -1;
        }
    }
    long n = 0;
    for (size_t i = 0; i < req->n_ids; i++) {
        bool needed = false;
        if (!plan_one(req, find_row(rows, n_rows, req->ids[i]), &changes[n], &needed, v))
            return -1;
        if (needed)
            n++;
    }
    v->status = 200;
    return n;
}

/* ---- running it ------------------------------------------------------------------------- */

static void touch(monitor_ops_outcome *o, const char *node)
{
    if (!node)
        return;
    for (int i = 0; i < o->n_touched; i++)
        if (strcmp(o->touched[i], node) == 0)
            return;
    if (o->n_touched < MONITOR_OPS_MAX_TOUCHED)
        snprintf(o->touched[o->n_touched++], sizeof o->touched[0], "%.*s", KG_NODE_ID_MAX, node);
}

static const char *effective_of(const char *home, const char *over)
{
    return over ? over : home;
}

/* Event fields and the nodes to nudge, from the changes written. */
static void describe(const monitor_op_request *req, const store_monitor_change *ch, long n,
                     const char *actor, monitor_ops_outcome *o)
{
    const char *from = NULL;
    bool several = false;
    for (long i = 0; i < n; i++) {
        const char *a = effective_of(ch[i].expect_home, ch[i].expect_over);
        const char *b = effective_of(ch[i].new_home, ch[i].new_over);
        touch(o, a);
        touch(o, b);
        if (i == 0)
            from = a;
        else if (!same(from, a))
            several = true;
    }
    snprintf(o->ev_from, sizeof o->ev_from, "%.*s", KG_NODE_ID_MAX,
             several ? "several" : (from ? from : ""));
    snprintf(o->ev_node, sizeof o->ev_node, "%s", req->kind == MONITOR_OP_UNPIN ? "" : req->node);
    snprintf(o->ev_to, sizeof o->ev_to, "%s", req->kind == MONITOR_OP_UNPIN ? "home" : req->node);
    char ids[96] = "";
    size_t off = 0;
    for (long i = 0; i < n && off < sizeof ids - 24; i++) {
        int w = snprintf(ids + off, sizeof ids - off, "%s%lld", i ? ", " : "",
                         (long long)ch[i].id);
        off += w > 0 ? (size_t)w : 0;
        if (i + 1 < n && off >= sizeof ids - 24)
            snprintf(ids + off, sizeof ids - off, ", ...");
    }
    const char *who = actor && *actor ? actor : "operator";
    const char *what = n == 1 ? "monitor" : "monitors";
    switch (req->kind) {
    case MONITOR_OP_MOVE:
        snprintf(o->ev_reason, sizeof o->ev_reason, "%.40s moved %ld %s (%s) to %s: %s", who, n,
                 what, ids, req->node,
                 req->revert ? "kumaguard's override, reverted like a failover"
                             : "new home, kept");
        break;
    case MONITOR_OP_PIN:
        snprintf(o->ev_reason, sizeof o->ev_reason, "%.40s pinned %ld %s (%s) to %s", who, n,
                 what, ids, req->node);
        break;
    case MONITOR_OP_UNPIN:
        snprintf(o->ev_reason, sizeof o->ev_reason, "%.40s unpinned %ld %s (%s)", who, n, what,
                 ids);
        break;
    }
}

void monitor_ops_run(kg_store *store, const monitor_op_request *req, const kg_snapshot *s,
                     const char *actor, monitor_ops_outcome *o)
{
    memset(o, 0, sizeof *o);
    o->store_rc = STORE_OK;
    if (!s) {
        verdict(&o->v, 503, "starting", "kumaguard has no cluster picture yet");
        return;
    }
    if (!req || req->n_ids == 0 || req->n_ids > MONITOR_OPS_MAX_BATCH) {
        verdict(&o->v, 400, "bad_request", "between 1 and %d monitor ids",
                MONITOR_OPS_MAX_BATCH);
        return;
    }
    store_monitor_query q = {.ids = req->ids, .n_ids = req->n_ids, .active = -1, .live = -1,
                             .limit = (int)req->n_ids};
    store_monitor_page page = {0};
    char err[256];
    int rc = store->ops->query_monitors(store, &q, &page, err, sizeof err);
    if (rc != STORE_OK) {
        o->store_rc = STORE_ERROR;
        verdict(&o->v, 503, "database_unavailable", "%s", err);
        return;
    }
    store_monitor_change *ch = calloc(req->n_ids, sizeof *ch);
    if (!ch) {
        store_free_page(&page);
        verdict(&o->v, 500, "out_of_memory", "planning the change");
        return;
    }
    long n = monitor_ops_plan(req, s->nodes, s->n_nodes, page.rows, page.n, ch, &o->v);
    if (n == 0) {
        verdict(&o->v, 200, "", "nothing to change: %s already so", req->n_ids == 1
                ? "the monitor is" : "the monitors are");
    } else if (n > 0) {
        char reason[KG_REASON_MAX];
        snprintf(reason, sizeof reason, "%s by %.60s", monitor_op_name(req->kind),
                 actor && *actor ? actor : "operator");
        size_t rows_written = 0;
        rc = store->ops->apply_monitor_changes(store, ch, (size_t)n, reason, &rows_written, err,
                                               sizeof err);
        if (rc == STORE_OK) {
            /* a change may only hand an override from kumaguard to the operator (a pin where
             * the failover put it): it counts even though no column changed */
            o->changed = (size_t)n;
            describe(req, ch, n, actor, o);
            verdict(&o->v, 200, "", "%ld of %zu monitors changed", n, req->n_ids);
        } else if (rc == STORE_CONFLICT) {
            verdict(&o->v, 409, "changed_meanwhile", "%s; nothing was changed, read and try "
                    "again", err);
        } else {
            o->store_rc = rc;
            verdict(&o->v, rc == STORE_FENCED ? 409 : 503,
                    rc == STORE_FENCED ? "not_leader" : "database_unavailable", "%s", err);
        }
    }
    free(ch);
    store_free_page(&page);
}
