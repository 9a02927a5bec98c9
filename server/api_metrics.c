/* api_metrics.c — Prometheus text rendering of a snapshot (see api_metrics.h).
 *
 * Owns: the metric families and their names.  Must not: do I/O or read the clock.  Output is
 * built in one growable buffer; an allocation failure anywhere makes the whole render return
 * NULL (the caller answers 500) rather than a truncated, misleading page. */
#include "api_metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *buf;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->buf ? b->buf + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 8192;
        while (ncap < b->len + (size_t)n + 1)
            ncap *= 2;
        char *nb = realloc(b->buf, ncap);
        if (!nb) {
            b->failed = true;
            return;
        }
        b->buf = nb;
        b->cap = ncap;
    }
}

static void family(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escape backslash, double quote and newline (exposition format rules). */
static void label_value(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (; *in && o + 3 < outlen; in++) {
        char c = *in;
        if (c == '\\' || c == '"') {
            out[o++] = '\\';
            out[o++] = c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = c;
        }
    }
    out[o] = '\0';
}

/* Prometheus float formatting: integers without decimals, +Inf/-Inf/NaN spelled out. */
static void fmt_float(double v, char *out, size_t len)
{
    if (isnan(v))
        snprintf(out, len, "NaN");
    else if (isinf(v))
        snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(out, len, "%.0f", v);
    else {
        /* microsecond resolution, trailing zeros dropped: 0.0125, 1790000000.123 */
        snprintf(out, len, "%.6f", v);
        size_t n = strlen(out);
        while (n > 1 && out[n - 1] == '0')
            out[--n] = '\0';
        if (n > 1 && out[n - 1] == '.')
            out[--n] = '\0';
    }
}

#define LBL_MAX (KG_NODE_ID_MAX * 2 + 8)

static void per_node_int(sbuf *b, const kg_snapshot *s, const char *name, const char *type,
                         const char *help, long long (*get)(const kg_node_view *))
{
    family(b, name, type, help);
    for (int i = 0; i < s->n_nodes; i++) {
        char lbl[LBL_MAX];
        label_value(s->nodes[i].id, lbl, sizeof lbl);
        sb_printf(b, "%s{node=\"%s\"} %lld\n", name, lbl, get(&s->nodes[i]));
    }
}

static long long get_fail(const kg_node_view *n) { return n->consecutive_failures; }
static long long get_succ(const kg_node_view *n) { return n->consecutive_successes; }
static long long get_eff(const kg_node_view *n) { return n->effective_monitors; }
static long long get_home(const kg_node_view *n) { return n->home_monitors; }
static long long get_pinned(const kg_node_view *n) { return n->pinned_monitors; }
static long long get_probes(const kg_node_view *n) { return n->probes_total; }
static long long get_probes_failed(const kg_node_view *n) { return n->probes_failed; }
static long long get_rc_calls(const kg_node_view *n) { return n->reconcile.calls; }
static long long get_rc_pending(const kg_node_view *n)
{
    return (long long)n->reconcile.pending_starts + n->reconcile.pending_stops;
}
static long long get_rc_in_flight(const kg_node_view *n) { return n->reconcile.in_flight; }
static long long get_rc_must_tell(const kg_node_view *n) { return n->reconcile.must_tell; }
static long long get_rc_left_to_cron(const kg_node_view *n) { return n->reconcile.left_to_cron; }

/* Reconcile calls to each node by outcome: what an alert on 429 / 401 / timeouts needs. */
static void reconcile_failures(sbuf *b, const kg_snapshot *s)
{
    family(b, "kumaguard_node_reconcile_failures_total", "counter",
           "Reconcile calls to the node that failed, by cause (rate_limited = 429: raise "
           "API_RATE_LIMIT on the nodes; unauthorized = 401: no first user, or a Bearer key; "
           "timeout = no answer by the deadline).");
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_reconcile_view *r = &s->nodes[i].reconcile;
        char lbl[LBL_MAX];
        label_value(s->nodes[i].id, lbl, sizeof lbl);
        long long other = r->failures - r->rate_limited - r->unauthorized - r->timeouts;
        const struct {
            const char *cause;
            long long n;
        } by[] = {{"rate_limited", r->rate_limited},
                  {"unauthorized", r->unauthorized},
                  {"timeout", r->timeouts},
                  {"other", other > 0 ? other : 0}};
        for (size_t k = 0; k < sizeof by / sizeof by[0]; k++)
            sb_printf(b, "kumaguard_node_reconcile_failures_total{node=\"%s\",cause=\"%s\"} %lld\n",
                      lbl, by[k].cause, by[k].n);
    }
}

static long long get_up(const kg_node_view *n)
{
    return node_state_routable(n->state) && n->host_valid;
}

static void scalar(sbuf *b, const char *name, const char *type, const char *help, double v)
{
    char num[64];
    fmt_float(v, num, sizeof num);
    family(b, name, type, help);
    sb_printf(b, "%s %s\n", name, num);
}

char *api_metrics_render(const kg_snapshot *s, size_t *len)
{
    sbuf b = {0};
    char num[64];

    /* --- nodes ------------------------------------------------------------------------ */
    family(&b, "kumaguard_node_state", "gauge",
           "Current state of each node (1 for the active state, 0 for the others).");
    for (int i = 0; i < s->n_nodes; i++) {
        char lbl[LBL_MAX];
        label_value(s->nodes[i].id, lbl, sizeof lbl);
        for (int st = 0; st < NODE_STATE_COUNT; st++)
            sb_printf(&b, "kumaguard_node_state{node=\"%s\",state=\"%s\"} %d\n", lbl,
                      node_state_name((node_state)st), s->nodes[i].state == (node_state)st);
    }
    per_node_int(&b, s, "kumaguard_node_routable", "gauge",
                 "1 when nginx routes to the node (online, suspect or draining, valid host).",
                 get_up);
    per_node_int(&b, s, "kumaguard_node_consecutive_failures", "gauge",
                 "Consecutive failed health probes of the node.", get_fail);
    per_node_int(&b, s, "kumaguard_node_consecutive_successes", "gauge",
                 "Consecutive successful health probes of the node.", get_succ);
    family(&b, "kumaguard_node_probe_latency_seconds", "gauge",
           "Duration of the node's last health probe.");
    for (int i = 0; i < s->n_nodes; i++) {
        if (s->nodes[i].last_latency_ms < 0)
            continue;
        char lbl[LBL_MAX];
        label_value(s->nodes[i].id, lbl, sizeof lbl);
        fmt_float(s->nodes[i].last_latency_ms / 1000.0, num, sizeof num);
        sb_printf(&b, "kumaguard_node_probe_latency_seconds{node=\"%s\"} %s\n", lbl, num);
    }
    per_node_int(&b, s, "kumaguard_node_probes_total", "counter",
                 "Health probes sent to the node since kumaguard started.", get_probes);
    per_node_int(&b, s, "kumaguard_node_probe_failures_total", "counter",
                 "Failed health probes of the node since kumaguard started.",
                 get_probes_failed);
    per_node_int(&b, s, "kumaguard_node_monitors", "gauge",
                 "Active monitors whose effective node (COALESCE(assigned_node, node_id)) is "
                 "the node.",
                 get_eff);
    per_node_int(&b, s, "kumaguard_node_home_monitors", "gauge",
                 "Active monitors whose home (node_id) is the node.", get_home);
    per_node_int(&b, s, "kumaguard_node_pinned_monitors", "gauge",
                 "Active monitors pinned to the node by an operator.", get_pinned);
    per_node_int(&b, s, "kumaguard_node_reconcile_calls_total", "counter",
                 "Reconcile calls sent to the node.", get_rc_calls);
    reconcile_failures(&b, s);
    per_node_int(&b, s, "kumaguard_node_reconcile_pending", "gauge",
                 "Monitors the node has yet to start or stop (moves not yet reconciled).",
                 get_rc_pending);
    per_node_int(&b, s, "kumaguard_node_reconcile_in_flight", "gauge",
                 "1 while a reconcile call to the node is running (never more).",
                 get_rc_in_flight);
    per_node_int(&b, s, "kumaguard_node_reconcile_must_tell", "gauge",
                 "1 while a node back from failing waits to be told before it is routed.",
                 get_rc_must_tell);
    per_node_int(&b, s, "kumaguard_node_reconcile_left_to_cron_total", "counter",
                 "Times pending work was left to the node's own :00 cron.", get_rc_left_to_cron);
    family(&b, "kumaguard_node_monitor_limit", "gauge", "Monitor capacity of the node.");
    for (int i = 0; i < s->n_nodes; i++) {
        char lbl[LBL_MAX];
        label_value(s->nodes[i].id, lbl, sizeof lbl);
        int lim = s->nodes[i].monitor_limit > 0 ? s->nodes[i].monitor_limit : s->monitor_limit;
        sb_printf(&b, "kumaguard_node_monitor_limit{node=\"%s\"} %d\n", lbl, lim);
    }

    /* --- probe latency histogram ------------------------------------------------------- */
    family(&b, "kumaguard_probe_duration_seconds", "histogram",
           "Duration of health probes over all nodes since kumaguard started.");
    long long cum = 0;
    for (int i = 0; i < 10; i++) {
        cum += s->latency_buckets[i];
        fmt_float(kg_latency_bucket_bounds[i] / 1000.0, num, sizeof num);
        sb_printf(&b, "kumaguard_probe_duration_seconds_bucket{le=\"%s\"} %lld\n", num, cum);
    }
    cum += s->latency_buckets[10];
    /* +Inf must equal _count; trust the larger if the snapshot's two disagree. */
    long long count = s->latency_count > cum ? s->latency_count : cum;
    sb_printf(&b, "kumaguard_probe_duration_seconds_bucket{le=\"+Inf\"} %lld\n", count);
    fmt_float(s->latency_sum_ms / 1000.0, num, sizeof num);
    sb_printf(&b, "kumaguard_probe_duration_seconds_sum %s\n", num);
    sb_printf(&b, "kumaguard_probe_duration_seconds_count %lld\n", count);

    /* --- cluster ------------------------------------------------------------------------ */
    scalar(&b, "kumaguard_nodes", "gauge", "Known nodes.", s->n_nodes);
    scalar(&b, "kumaguard_nodes_online", "gauge", "Nodes online or suspect.", s->nodes_online);
    scalar(&b, "kumaguard_monitors", "gauge", "Monitor rows.", s->monitors_total);
    scalar(&b, "kumaguard_monitors_active", "gauge", "Active monitors.", s->monitors_active);
    scalar(&b, "kumaguard_monitors_unassigned", "gauge",
           "Active monitors with neither a home nor an override.", s->monitors_unassigned);
    scalar(&b, "kumaguard_monitors_stranded", "gauge",
           "Active monitors whose effective node is not routable.", s->monitors_stranded);
    scalar(&b, "kumaguard_panic", "gauge",
           "1 while the panic guard is engaged (no moves, nginx frozen).", s->panic);

    /* --- operations --------------------------------------------------------------------- */
    scalar(&b, "kumaguard_failovers_total", "counter", "Failover operations.",
           (double)s->failovers_total);
    scalar(&b, "kumaguard_reverts_total", "counter", "Revert (recovery) operations.",
           (double)s->reverts_total);
    scalar(&b, "kumaguard_rebalances_total", "counter", "Rebalance operations.",
           (double)s->rebalances_total);
    scalar(&b, "kumaguard_adoptions_total", "counter", "Adoption operations.",
           (double)s->adoptions_total);
    scalar(&b, "kumaguard_monitors_moved_total", "counter",
           "Monitors moved by any operation.", (double)s->monitors_moved_total);
    scalar(&b, "kumaguard_reconcile_calls_total", "counter",
           "Reconcile nudges sent to Kuma nodes.", (double)s->reconcile_calls_total);
    scalar(&b, "kumaguard_reconcile_failures_total", "counter",
           "Reconcile nudges that failed.", (double)s->reconcile_failures_total);
    scalar(&b, "kumaguard_rebalance_running", "gauge",
           "1 while a move operation is in progress.", s->rebalance.running);

    /* --- nginx -------------------------------------------------------------------------- */
    family(&b, "kumaguard_nginx_reloads_total", "counter",
           "nginx validate+reload attempts by result.");
    sb_printf(&b, "kumaguard_nginx_reloads_total{result=\"ok\"} %lld\n",
              (long long)s->nginx.reloads_ok);
    sb_printf(&b, "kumaguard_nginx_reloads_total{result=\"failed\"} %lld\n",
              (long long)s->nginx.reloads_failed);
    scalar(&b, "kumaguard_nginx_renders_total", "counter", "Renders of the nginx include.",
           (double)s->nginx.renders);
    scalar(&b, "kumaguard_nginx_routed_nodes", "gauge",
           "Nodes in upstream kuma_cluster.", s->nginx.routed_nodes);
    scalar(&b, "kumaguard_nginx_last_reload_ok", "gauge",
           "1 when the last nginx validate+reload succeeded.", s->nginx.last_ok);

    /* --- database and leadership -------------------------------------------------------- */
    scalar(&b, "kumaguard_db_up", "gauge", "1 when the cluster database is reachable.",
           s->db_ok);
    scalar(&b, "kumaguard_db_errors_total", "counter", "Cluster database errors.",
           (double)s->db_errors_total);
    scalar(&b, "kumaguard_leader", "gauge", "1 when this instance holds the leader lease.",
           s->is_leader);
    scalar(&b, "kumaguard_leader_generation", "gauge", "Fencing generation of the lease.",
           (double)s->leader_generation);
    scalar(&b, "kumaguard_start_time_seconds", "gauge",
           "Start time of kumaguard, seconds since the epoch.", (double)s->started_ms / 1000.0);
    scalar(&b, "kumaguard_snapshot_timestamp_seconds", "gauge",
           "When the served state was built, seconds since the epoch.",
           (double)s->built_ms / 1000.0);

    if (b.failed || !b.buf) {
        free(b.buf);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.buf;
}

/* ---- webhooks ------------------------------------------------------------------------- */

static void per_sink(sbuf *b, const webhook_sink_status *st, int n, const char *name,
                     const char *type, const char *help,
                     long long (*get)(const webhook_sink_status *))
{
    family(b, name, type, help);
    for (int i = 0; i < n; i++) {
        char lbl[200];
        label_value(st[i].target, lbl, sizeof lbl);
        sb_printf(b, "%s{sink=\"%d\",target=\"%s\"} %lld\n", name, i + 1, lbl, get(&st[i]));
    }
}

static long long wh_delivered(const webhook_sink_status *w) { return w->delivered; }
static long long wh_failures(const webhook_sink_status *w) { return w->failures; }
static long long wh_retries(const webhook_sink_status *w) { return w->retries; }
static long long wh_given_up(const webhook_sink_status *w) { return w->given_up; }
static long long wh_dropped(const webhook_sink_status *w) { return w->dropped; }
static long long wh_queued(const webhook_sink_status *w) { return w->queued; }

char *api_metrics_append_webhooks(char *text, size_t *len, const webhook_sink_status *st, int n)
{
    if (!text || n <= 0)
        return text;
    sbuf b = {.buf = text, .len = *len, .cap = *len + 1};
    per_sink(&b, st, n, "kumaguard_webhook_deliveries_total", "counter",
             "Events a webhook receiver accepted (2xx).", wh_delivered);
    per_sink(&b, st, n, "kumaguard_webhook_failures_total", "counter",
             "Failed webhook delivery attempts (each retry counts).", wh_failures);
    per_sink(&b, st, n, "kumaguard_webhook_retries_total", "counter",
             "Webhook delivery attempts after the first for an event.", wh_retries);
    per_sink(&b, st, n, "kumaguard_webhook_given_up_total", "counter",
             "Events dropped after failing for the whole retry window.", wh_given_up);
    per_sink(&b, st, n, "kumaguard_webhook_dropped_total", "counter",
             "Events dropped because the webhook queue was full.", wh_dropped);
    per_sink(&b, st, n, "kumaguard_webhook_queue_length", "gauge",
             "Events waiting for delivery.", wh_queued);
    if (b.failed) {
        free(b.buf);
        return NULL;
    }
    *len = b.len;
    return b.buf;
}
