/* api_json.c — snapshot -> JSON documents of the HTTP API (see api_json.h and docs/API.md).
 *
 * Owns: the shape of every JSON document kumaguard serves.  Must not: do I/O, read the clock
 * (times come from the snapshot or a `now_ms` argument) or change the snapshot.  Numbers with
 * decimals are serialised with a fixed precision (json_object_new_double_s) so the output is
 * stable and free of binary-float noise like 0.30000000000000004. */
#include "api_json.h"

#include "hostcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_route.h"
#include "setup_watch.h"

#define RECENT_IN_SYSTEM_STATUS 50 /* newest events carried in /api/system-status */

/* ------------------------------------------------------------------------------------------
 * Value helpers
 * ------------------------------------------------------------------------------------------ */

const char *api_format_time(int64_t ms, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (ms <= 0)
        return buf;
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&sec, &tm))
        return buf;
    /* strftime, not one snprintf: GCC at -O3 cannot see that the fields are small and warns
     * (-Wformat-truncation) */
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned milli = (unsigned)(ms % 1000);
    if (n == 0 || len - n < 6) {
        buf[0] = '\0';
        return buf;
    }
    buf[n++] = '.';
    buf[n++] = (char)('0' + milli / 100);
    buf[n++] = (char)('0' + milli / 10 % 10);
    buf[n++] = (char)('0' + milli % 10);
    buf[n++] = 'Z';
    buf[n] = '\0';
    return buf;
}

static json_object *jtime(int64_t ms)
{
    char buf[40];
    if (ms <= 0)
        return NULL; /* json-c serialises a NULL member as null */
    return json_object_new_string(api_format_time(ms, buf, sizeof buf));
}

/* Non-empty string, or null. */
static json_object *jstr_or_null(const char *s)
{
    return (s && *s) ? json_object_new_string(s) : NULL;
}

static json_object *jstr(const char *s)
{
    return json_object_new_string(s ? s : "");
}

/* A number with at most `prec` decimals, trailing zeros dropped; null for NaN/Inf. */
static json_object *jnum(double v, int prec)
{
    if (!isfinite(v))
        return NULL;
    char buf[64];
    snprintf(buf, sizeof buf, "%.*f", prec, v);
    if (strchr(buf, '.')) {
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == '0')
            buf[--n] = '\0';
        if (n > 0 && buf[n - 1] == '.')
            buf[--n] = '\0';
    }
    if (strcmp(buf, "-0") == 0)
        strcpy(buf, "0");
    return json_object_new_double_s(v, buf);
}

static void add(json_object *o, const char *key, json_object *v)
{
    json_object_object_add(o, key, v);
}

static void add_int(json_object *o, const char *key, int64_t v)
{
    add(o, key, json_object_new_int64(v));
}

static void add_bool(json_object *o, const char *key, bool v)
{
    add(o, key, json_object_new_boolean(v));
}

char *api_json_dump(json_object *o, size_t *len)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    if (!s)
        return NULL;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    memcpy(out, s, n + 1);
    if (len)
        *len = n;
    return out;
}

json_object *api_doc_error(const char *error, const char *detail)
{
    json_object *o = json_object_new_object();
    add(o, "error", jstr(error && *error ? error : "error"));
    add(o, "detail", jstr(detail));
    return o;
}

static int node_limit(const kg_node_view *n, int default_limit)
{
    return n->monitor_limit > 0 ? n->monitor_limit : default_limit;
}

static double usage_percent(int effective, int limit)
{
    return limit > 0 ? 100.0 * effective / limit : 0.0;
}

static json_object *latency_array(const kg_node_view *n)
{
    json_object *a = json_object_new_array_ext(n->n_latency > 0 ? n->n_latency : 1);
    int count = n->n_latency < 0 ? 0 : (n->n_latency > KG_LATENCY_HISTORY ? KG_LATENCY_HISTORY
                                                                          : n->n_latency);
    for (int i = 0; i < count; i++) {
        double v = n->latency_history[i];
        json_object_array_add(a, v < 0 ? NULL : jnum(v, 3));
    }
    return a;
}

static json_object *last_latency(const kg_node_view *n)
{
    return n->last_latency_ms < 0 ? NULL : jnum(n->last_latency_ms, 3);
}

/* ------------------------------------------------------------------------------------------
 * Shared pieces
 * ------------------------------------------------------------------------------------------ */

const char *api_cluster_status(const kg_snapshot *s)
{
    int considered = 0, online = 0, routable = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        node_state st = s->nodes[i].state;
        if (node_state_routable(st) && s->nodes[i].host_valid)
            routable++;
        if (st == NODE_MAINTENANCE)
            continue;
        considered++;
        if (st == NODE_ONLINE)
            online++;
    }
    if (s->panic || routable == 0)
        return "critical";
    if (online == considered && s->db_ok)
        return "healthy";
    return "degraded";
}

static int count_routable(const kg_snapshot *s)
{
    int n = 0;
    for (int i = 0; i < s->n_nodes; i++)
        if (node_state_routable(s->nodes[i].state) && s->nodes[i].host_valid)
            n++;
    return n;
}

/* The two fields every per-node entry of every document starts with. */
static json_object *node_entry(const kg_node_view *n)
{
    json_object *e = json_object_new_object();
    add(e, "node_id", jstr(n->id));
    add(e, "state", jstr(node_state_name(n->state)));
    return e;
}

/* Reconcile calls to the node: what is pending, what happened last, why work waits. */
static json_object *reconcile_obj(const kg_reconcile_view *r)
{
    json_object *o = json_object_new_object();
    add_int(o, "pending_starts", r->pending_starts);
    add_int(o, "pending_stops", r->pending_stops);
    add_bool(o, "in_flight", r->in_flight);
    add_bool(o, "must_tell", r->must_tell);
    add(o, "waiting", jstr_or_null(r->waiting));
    add(o, "last_result", jstr(r->last_result ? r->last_result : "none"));
    add_int(o, "last_http_status", r->last_http);
    add(o, "last_call", jtime(r->last_call_ms));
    add(o, "call_started", jtime(r->call_started_ms));
    add_int(o, "last_duration_ms", r->last_duration_ms);
    add(o, "next_cron", jtime(r->next_cron_ms));
    add_int(o, "calls", r->calls);
    add_int(o, "failures", r->failures);
    add_int(o, "timeouts", r->timeouts);
    add_int(o, "rate_limited", r->rate_limited);
    add_int(o, "unauthorized", r->unauthorized);
    add_int(o, "left_to_cron", r->left_to_cron);
    return o;
}

json_object *api_json_node(const kg_node_view *n, int default_limit)
{
    json_object *o = json_object_new_object();
    int limit = node_limit(n, default_limit);
    add(o, "node_id", jstr(n->id));
    add(o, "name", jstr(n->name));
    add(o, "node_name", jstr(n->name));                    /* compat */
    add(o, "status", jstr(node_state_name(n->state)));     /* compat: the state */
    add(o, "host", jstr(n->host));
    add_bool(o, "host_valid", n->host_valid);
    add_bool(o, "is_primary", n->is_primary);
    add_bool(o, "is_static", n->is_static);
    add(o, "state", jstr(node_state_name(n->state)));
    add(o, "previous_state", jstr(node_state_name(n->prev_state)));
    add(o, "state_since", jtime(n->state_since_ms));
    add_bool(o, "routable", node_state_routable(n->state) && n->host_valid);
    add_bool(o, "placeable", node_state_placeable(n->state) && n->proven && n->host_valid);
    add_bool(o, "proven", n->proven);
    add(o, "host_problem", jstr_or_null(n->host_problem));
    add_int(o, "consecutive_failures", n->consecutive_failures);
    add_int(o, "consecutive_successes", n->consecutive_successes);
    add(o, "last_latency_ms", last_latency(n));
    add(o, "latency_history", latency_array(n));
    add(o, "last_probe", jtime(n->last_probe_ms));
    add(o, "last_seen", jtime(n->last_seen_ms));
    add(o, "last_failure", jtime(n->last_failure_ms));
    add(o, "last_failure_reason", jstr_or_null(n->last_failure_reason));
    add_int(o, "http_status", n->http_status);
    add_int(o, "probes_total", n->probes_total);
    add_int(o, "probes_failed", n->probes_failed);
    add_int(o, "monitor_count", n->effective_monitors);
    add_int(o, "monitors_effective", n->effective_monitors);
    add_int(o, "monitors_home", n->home_monitors);
    add_int(o, "monitors_pinned", n->pinned_monitors);
    add_int(o, "monitor_limit", limit);
    add(o, "usage_percent", jnum(usage_percent(n->effective_monitors, limit), 2));
    add(o, "reconcile", reconcile_obj(&n->reconcile));
    return o;
}

/* ------------------------------------------------------------------------------------------
 * Database errors in public documents
 * ------------------------------------------------------------------------------------------ */

/* The driver's error text names the server's host and port, the database and the user
 * ("cannot connect to 10.0.0.5:3306 (database kuma, user kuma): ...").  Public documents get
 * only what went wrong, in general terms; the detail is for the token holder
 * (api_json_add_db_detail) and the log. */
static const struct {
    const char *needle;
    const char *general;
} db_error_kinds[] = {
    {"waiting for the Kuma nodes", "waiting for the Kuma nodes to create the node/monitor tables"},
    {"Access denied", "the database refused kumaguard's user name or password"},
    {"Unknown database", "the configured database does not exist"},
    {"Unknown server host", "cannot resolve the database server's name"},
    {"Unknown MySQL server host", "cannot resolve the database server's name"},
    {"timed out", "the database server did not answer in time"},
    {"Timeout", "the database server did not answer in time"},
    {"Lost connection", "lost the connection to the database server"},
    {"gone away", "lost the connection to the database server"},
    {"shutdown", "the database server is shutting down"},
    {"Can't connect", "cannot connect to the database server"},
    {"cannot connect", "cannot connect to the database server"},
    {"Connection refused", "cannot connect to the database server"},
    {"unable to open database file", "cannot open the database file"},
    {"database is locked", "the database is locked by another process"},
    {"fenced", "another controller holds the leader lease"},
};

const char *api_db_error_public(const char *raw, char *out, size_t len)
{
    if (!len)
        return out;
    out[0] = '\0';
    if (!raw || !*raw)
        return out;
    const char *general = "database error";
    for (size_t i = 0; i < sizeof db_error_kinds / sizeof db_error_kinds[0]; i++)
        if (strstr(raw, db_error_kinds[i].needle)) {
            general = db_error_kinds[i].general;
            break;
        }
    /* Keep kumaguard's own label of what it was doing ("load nodes: ..."): lower-case words
     * chosen by the controller, never driver text. */
    size_t w = strspn(raw, "abcdefghijklmnopqrstuvwxyz ");
    if (w > 0 && w < 40 && raw[w] == ':' && strncmp(general, "waiting", 7) != 0)
        snprintf(out, len, "%.*s: %s", (int)w, raw, general);
    else
        snprintf(out, len, "%s", general);
    return out;
}

void api_json_add_db_detail(json_object *doc, const kg_snapshot *s, const kg_config *cfg)
{
    json_object *db = NULL;
    if (!json_object_object_get_ex(doc, "database", &db) || !db)
        return;
    add(db, "error_detail", jstr_or_null(s->db_error));
    if (!cfg)
        return;
    bool socket = cfg->db_host && cfg->db_host[0] == '/';
    add(db, "host", jstr_or_null(cfg->db_host && !socket ? cfg->db_host : NULL));
    add(db, "socket", jstr_or_null(socket ? cfg->db_host : NULL));
    add(db, "port", cfg->db_host && !socket ? json_object_new_int(cfg->db_port) : NULL);
    add(db, "name", jstr_or_null(cfg->db_host ? cfg->db_name : NULL));
    add(db, "user", jstr_or_null(cfg->db_host ? cfg->db_user : NULL));
    add(db, "sqlite_path", jstr_or_null(cfg->db_host ? NULL : cfg->sqlite_path));
}

json_object *api_json_event(const kg_event *e)
{
    json_object *o = json_object_new_object();
    add_int(o, "id", e->id);
    add(o, "time", jtime(e->ts_ms));
    add(o, "kind", jstr(event_kind_name(e->kind)));
    add(o, "node", jstr_or_null(e->node));
    add(o, "from", jstr_or_null(e->from));
    add(o, "to", jstr_or_null(e->to));
    add_int(o, "count", e->count);
    add_int(o, "duration_ms", e->duration_ms);
    if (e->kind == EV_DB && strstr(e->reason, ": ")) {
        /* "database unavailable during load nodes: <driver text>": the driver text names
         * hosts and users, so history and the event stream carry its general kind only */
        char head[sizeof e->reason], general[160], reason[sizeof e->reason + 168];
        const char *sep = strstr(e->reason, ": ");
        snprintf(head, sizeof head, "%.*s", (int)(sep - e->reason), e->reason);
        api_db_error_public(sep + 2, general, sizeof general);
        snprintf(reason, sizeof reason, "%s: %s", head,
                 strchr(general, ':') ? strchr(general, ':') + 2 : general);
        add(o, "reason", jstr(reason));
    } else {
        add(o, "reason", jstr_or_null(e->reason));
    }
    return o;
}

static json_object *database_obj(const kg_snapshot *s)
{
    json_object *o = json_object_new_object();
    add_bool(o, "ok", s->db_ok);
    add(o, "backend", jstr_or_null(s->db_backend));
    char general[160];
    add(o, "error", jstr_or_null(api_db_error_public(s->db_error, general, sizeof general)));
    add_int(o, "errors_total", s->db_errors_total);
    add(o, "state", jstr_or_null(s->db_state));
    add(o, "down_since", jtime(s->db_down_since_ms));
    add(o, "last_ok", jtime(s->db_last_ok_ms));
    add(o, "next_retry", jtime(s->db_next_retry_ms));
    return o;
}

/* The local history (state.db): a full or read-only disk must not go unnoticed. */
static json_object *history_obj(const kg_snapshot *s)
{
    json_object *o = json_object_new_object();
    add_bool(o, "ok", !s->history_failing);
    add(o, "error", jstr_or_null(s->history_error));
    add_int(o, "events_lost", s->history_lost);
    return o;
}

/* The panic guard as operators need it: since when, how many fail, who overrode it. */
static json_object *panic_obj(const kg_snapshot *s)
{
    json_object *o = json_object_new_object();
    add_bool(o, "engaged", s->panic);
    add(o, "reason", jstr_or_null(s->panic_reason));
    add(o, "since", jtime(s->panic_since_ms));
    add_int(o, "nodes_failing", s->panic_failing);
    add_int(o, "nodes_counted", s->panic_total);
    add_bool(o, "override", s->panic_override);
    add(o, "override_by", jstr_or_null(s->panic_override_by));
    add_int(o, "nodes_released", s->panic_released);
    return o;
}

static json_object *leader_obj(const kg_snapshot *s)
{
    json_object *o = json_object_new_object();
    add_bool(o, "is_leader", s->is_leader);
    add_int(o, "generation", s->leader_generation);
    add(o, "instance_id", jstr_or_null(s->instance_id));
    return o;
}

static json_object *states_obj(const kg_snapshot *s)
{
    int counts[NODE_STATE_COUNT] = {0};
    for (int i = 0; i < s->n_nodes; i++)
        if (s->nodes[i].state >= 0 && s->nodes[i].state < NODE_STATE_COUNT)
            counts[s->nodes[i].state]++;
    json_object *o = json_object_new_object();
    for (int st = 0; st < NODE_STATE_COUNT; st++)
        add_int(o, node_state_name((node_state)st), counts[st]);
    return o;
}

/* Cluster summary shared by several documents. */
static void add_cluster_summary(json_object *o, const kg_snapshot *s)
{
    add(o, "status", jstr(api_cluster_status(s)));
    add_int(o, "nodes_total", s->n_nodes);
    add_int(o, "nodes_online", s->nodes_online);
    add_int(o, "nodes_routable", count_routable(s));
    add(o, "nodes_by_state", states_obj(s));
    add_int(o, "monitors_total", s->monitors_total);
    add_int(o, "monitors_active", s->monitors_active);
    add_int(o, "monitors_unassigned", s->monitors_unassigned);
    add_int(o, "monitors_stranded", s->monitors_stranded);
    add(o, "monitors_refreshed_at", jtime(s->monitors_refreshed_ms));
    add_int(o, "monitor_limit", s->monitor_limit);
    add_bool(o, "panic", s->panic);
    add(o, "panic_reason", jstr_or_null(s->panic_reason));
}

static json_object *new_doc(const kg_snapshot *s)
{
    json_object *o = json_object_new_object();
    add(o, "generated_at", jtime(s->built_ms));
    add_int(o, "snapshot_seq", (int64_t)s->seq);
    return o;
}

/* ------------------------------------------------------------------------------------------
 * Keys of the Lua version, so its users' scripts keep working.  Added next to kumaguard's own, with the Lua meaning;
 * docs/API.md marks them "compat".  `timestamp` is Unix seconds as a number, as the Lua
 * version's os.time(): here the time the snapshot was taken (kumaguard's `generated_at`).
 * ------------------------------------------------------------------------------------------ */

static void add_compat_timestamp(json_object *o, int64_t ms)
{
    add_int(o, "timestamp", ms > 0 ? ms / 1000 : 0);
}

/* check_count / success_count / fail_count: probes since start, over every node. */
static void add_probe_counts(json_object *o, const kg_snapshot *s)
{
    int64_t total = 0, failed = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        total += s->nodes[i].probes_total;
        failed += s->nodes[i].probes_failed;
    }
    add_int(o, "check_count", total);
    add_int(o, "success_count", total - failed);
    add_int(o, "fail_count", failed);
}

/* The Lua version's cluster status (its /lb/health body, also /lb/fixed-node-status's
 * cluster_status): per node id, status, last_seen and monitor_count. */
static json_object *lb_health_nodes(const kg_snapshot *s)
{
    json_object *a = json_object_new_array_ext(s->n_nodes > 0 ? s->n_nodes : 1);
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *n = &s->nodes[i];
        json_object *e = json_object_new_object();
        add(e, "node_id", jstr(n->id));
        add(e, "status", jstr(node_state_name(n->state)));
        add_bool(e, "routable", node_state_routable(n->state) && n->host_valid);
        add_int(e, "monitor_count", n->effective_monitors);
        add(e, "last_seen", jtime(n->last_seen_ms));
        json_object_array_add(a, e);
    }
    return a;
}

/* First-run setup (setup_watch.h): the body of /api/setup-status and system-status "setup". */
static json_object *setup_obj(const kg_snapshot *s)
{
    json_object *o = json_object_new_object();
    const char *mode = setup_routing_mode(s);
    const kg_node_view *p = s->setup_primary[0] ? snapshot_find_node(s, s->setup_primary) : NULL;
    add_bool(o, "setup_complete", s->setup_complete);
    add(o, "routing_mode", jstr(mode));
    add(o, "primary_node", jstr_or_null(s->setup_primary));
    char msg[256];
    if (!s->setup_gated && strcmp(s->db_backend, "mariadb") == 0 && !s->setup_checked_ms)
        snprintf(msg, sizeof msg, "not known yet (the database has not answered): requests "
                 "are spread over the cluster");
    else if (!s->setup_gated)
        snprintf(msg, sizeof msg, "not gated: this database has no Uptime Kuma `user` table "
                 "(embedded store, or created by kumaguard); requests are spread over the "
                 "cluster");
    else if (s->setup_complete)
        snprintf(msg, sizeof msg, "setup complete: a user exists; requests are spread over the "
                 "cluster");
    else if (p)
        snprintf(msg, sizeof msg, "setup pending: no Uptime Kuma user yet; every request goes "
                 "to the primary node %s, where the first user is created", p->id);
    else
        snprintf(msg, sizeof msg, "setup pending: no Uptime Kuma user yet and no primary node "
                 "(no is_primary row, no node1): create the first user on the node started "
                 "with UPTIME_KUMA_PRIMARY=true");
    add(o, "message", jstr(msg));
    add_bool(o, "gated", s->setup_gated);
    add_bool(o, "reconcile_allowed", s->setup_complete);
    add(o, "primary_host", p ? jstr_or_null(p->host) : NULL);
    char url[KG_HOST_MAX + 16];
    snprintf(url, sizeof url, "http://%s/", p ? p->host : "");
    add(o, "setup_url", p && p->host_valid ? jstr(url) : NULL);
    add(o, "checked_at", jtime(s->setup_checked_ms));
    return o;
}

/* ------------------------------------------------------------------------------------------
 * Document bodies (shared by the standalone endpoints and /api/system-status)
 * ------------------------------------------------------------------------------------------ */

static void fill_load_balancer(json_object *o, const kg_snapshot *s, bool with_nodes)
{
    const kg_nginx_view *ng = &s->nginx;
    add_bool(o, "enabled", ng->enabled);
    add(o, "include_path", jstr_or_null(ng->include_path));
    add(o, "upstream", jstr("kuma_cluster"));
    add_int(o, "routed_nodes", ng->routed_nodes);
    add_bool(o, "fallback_all", ng->fallback_all);
    add_bool(o, "frozen_by_panic", s->panic);
    add_int(o, "renders", ng->renders);
    add_int(o, "writes_skipped_unchanged", ng->writes_skipped_unchanged);
    add_int(o, "reloads_ok", ng->reloads_ok);
    add_int(o, "reloads_failed", ng->reloads_failed);
    add(o, "last_reload", jtime(ng->last_reload_ms));
    add(o, "last_reload_duration_ms", jnum(ng->last_reload_duration_ms, 3));
    add_bool(o, "last_ok", ng->last_ok);
    add(o, "last_error", jstr_or_null(ng->last_error));
    if (!with_nodes)
        return;
    json_object *a = json_object_new_array_ext(s->n_nodes > 0 ? s->n_nodes : 1);
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *n = &s->nodes[i];
        json_object *e = json_object_new_object();
        char up[KG_NODE_ID_MAX + 16];
        snprintf(up, sizeof up, "kuma_node_%s", n->id);
        add(e, "node_id", jstr(n->id));
        add(e, "host", jstr(n->host));
        add_bool(e, "host_valid", n->host_valid);
        add(e, "state", jstr(node_state_name(n->state)));
        add_bool(e, "routable", node_state_routable(n->state) && n->host_valid);
        add(e, "upstream", jstr(up));
        json_object_array_add(a, e);
    }
    add(o, "nodes", a);
}

static void fill_health_check(json_object *o, const kg_snapshot *s, const kg_config *cfg,
                              bool with_nodes)
{
    if (cfg) {
        json_object *c = json_object_new_object();
        add_int(c, "interval_ms", cfg->health_interval_ms);
        add_int(c, "fast_interval_ms", cfg->health_fast_interval_ms);
        add_int(c, "timeout_ms", cfg->health_timeout_ms);
        add(c, "path", jstr_or_null(cfg->health_path));
        add_int(c, "expected_status", cfg->health_expected_status);
        add_int(c, "fall", cfg->fall);
        add_int(c, "rise", cfg->rise);
        add(o, "config", c);
    }
    int64_t total = 0, failed = 0, last = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        total += s->nodes[i].probes_total;
        failed += s->nodes[i].probes_failed;
        if (s->nodes[i].last_probe_ms > last)
            last = s->nodes[i].last_probe_ms;
    }
    add_int(o, "probes_total", total);
    add_int(o, "probes_failed", failed);
    add(o, "last_check", jtime(last));

    json_object *h = json_object_new_object();
    json_object *b = json_object_new_array_ext(11);
    int64_t cum = 0;
    for (int i = 0; i < 11; i++) {
        cum += s->latency_buckets[i];
        json_object *e = json_object_new_object();
        add(e, "le_ms", i < 10 ? jnum(kg_latency_bucket_bounds[i], 3) : jstr("+Inf"));
        add_int(e, "count", cum);
        json_object_array_add(b, e);
    }
    add(h, "buckets", b);
    add(h, "sum_ms", jnum(s->latency_sum_ms, 3));
    add_int(h, "count", s->latency_count);
    add(o, "latency_histogram", h);

    if (!with_nodes)
        return;
    json_object *a = json_object_new_array_ext(s->n_nodes > 0 ? s->n_nodes : 1);
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *n = &s->nodes[i];
        json_object *e = node_entry(n);
        add_int(e, "consecutive_failures", n->consecutive_failures);
        add_int(e, "consecutive_successes", n->consecutive_successes);
        add(e, "last_latency_ms", last_latency(n));
        add(e, "last_probe", jtime(n->last_probe_ms));
        add(e, "last_seen", jtime(n->last_seen_ms));
        add(e, "last_failure", jtime(n->last_failure_ms));
        add(e, "last_failure_reason", jstr_or_null(n->last_failure_reason));
        add_int(e, "http_status", n->http_status);
        add_int(e, "probes_total", n->probes_total);
        add_int(e, "probes_failed", n->probes_failed);
        add(e, "latency_history", latency_array(n));
        json_object_array_add(a, e);
    }
    add(o, "nodes", a);
}

static void fill_fault_detection(json_object *o, const kg_snapshot *s, const kg_config *cfg)
{
    int failing = 0, considered = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        node_state st = s->nodes[i].state;
        if (st == NODE_MAINTENANCE)
            continue;
        considered++;
        if (st == NODE_OFFLINE || st == NODE_SUSPECT)
            failing++;
    }
    add_bool(o, "panic", s->panic);
    add(o, "panic_reason", jstr_or_null(s->panic_reason));
    add(o, "panic_guard", panic_obj(s));
    if (cfg)
        add(o, "panic_share", jnum(cfg->panic_share, 3));
    add_int(o, "nodes_total", s->n_nodes);
    add_int(o, "nodes_failing", failing);
    add(o, "failing_share", jnum(considered ? (double)failing / considered : 0.0, 3));
    add_int(o, "monitors_stranded", s->monitors_stranded);
    add_int(o, "monitors_unassigned", s->monitors_unassigned);
    /* Nodes that still carry monitors while nothing routes to them: what "stranded" means. */
    json_object *a = json_object_new_array();
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *n = &s->nodes[i];
        if (node_state_routable(n->state) || n->effective_monitors <= 0)
            continue;
        json_object *e = node_entry(n);
        add_int(e, "monitors_effective", n->effective_monitors);
        add_int(e, "monitors_pinned", n->pinned_monitors);
        json_object_array_add(a, e);
    }
    add(o, "stranded_nodes", a);
    add(o, "database", database_obj(s));
    add(o, "leader", leader_obj(s));
}

static void fill_rebalancing(json_object *o, const kg_snapshot *s, const kg_config *cfg,
                             bool with_nodes)
{
    const kg_rebalance_view *r = &s->rebalance;
    add_bool(o, "running", r->running);
    add(o, "operation", jstr_or_null(r->operation));
    add(o, "phase", jstr_or_null(r->phase));
    add_int(o, "moved", r->moved);
    add_int(o, "total", r->total);
    add(o, "progress_percent",
        jnum(r->total > 0 ? 100.0 * r->moved / r->total : (r->running ? 0.0 : 100.0), 1));
    add(o, "started", jtime(r->started_ms));
    add(o, "eta", jtime(r->eta_ms));
    add(o, "finished", jtime(r->finished_ms));
    add(o, "last_error", jstr_or_null(r->last_error));

    /* Balance over the nodes that can take monitors, counted by effective node. */
    int cnt = 0;
    long long sum = 0;
    int mn = 0, mx = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *n = &s->nodes[i];
        if (!node_state_placeable(n->state))
            continue;
        int e = n->effective_monitors;
        if (cnt == 0 || e < mn)
            mn = e;
        if (cnt == 0 || e > mx)
            mx = e;
        sum += e;
        cnt++;
    }
    double mean = cnt ? (double)sum / cnt : 0.0;
    json_object *b = json_object_new_object();
    add_int(b, "nodes", cnt);
    add(b, "mean", jnum(mean, 2));
    add_int(b, "min", mn);
    add_int(b, "max", mx);
    add(b, "spread", jnum(mean > 0 ? (mx - mn) / mean : 0.0, 3));
    if (cfg) {
        add(b, "tolerance", jnum(cfg->balance_tolerance, 3));
        add(b, "auto_rebalance_spread", jnum(cfg->auto_rebalance_spread, 3));
    }
    add(o, "balance", b);

    json_object *t = json_object_new_object();
    add_int(t, "failovers", s->failovers_total);
    add_int(t, "reverts", s->reverts_total);
    add_int(t, "rebalances", s->rebalances_total);
    add_int(t, "adoptions", s->adoptions_total);
    add_int(t, "monitors_moved", s->monitors_moved_total);
    add_int(t, "reconcile_calls", s->reconcile_calls_total);
    add_int(t, "reconcile_failures", s->reconcile_failures_total);
    add(o, "totals", t);

    if (!with_nodes)
        return;
    json_object *a = json_object_new_array_ext(s->n_nodes > 0 ? s->n_nodes : 1);
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *n = &s->nodes[i];
        json_object *e = node_entry(n);
        add_int(e, "monitors_effective", n->effective_monitors);
        add_int(e, "monitors_home", n->home_monitors);
        add_int(e, "monitors_pinned", n->pinned_monitors);
        add(e, "deviation_percent",
            node_state_placeable(n->state) && mean > 0
                ? jnum(100.0 * (n->effective_monitors - mean) / mean, 1)
                : NULL);
        json_object_array_add(a, e);
    }
    add(o, "nodes", a);
}

json_object *api_json_capacity_node(const kg_node_view *n, int default_limit)
{
    int limit = node_limit(n, default_limit);
    json_object *e = node_entry(n);
    add_bool(e, "placeable", node_state_placeable(n->state));
    add_int(e, "effective", n->effective_monitors);
    add_int(e, "home", n->home_monitors);
    add_int(e, "pinned", n->pinned_monitors);
    add_int(e, "limit", limit);
    add_int(e, "current_count", n->effective_monitors); /* compat */
    add_int(e, "limit_per_node", limit);                /* compat */
    add_int(e, "available", limit > n->effective_monitors ? limit - n->effective_monitors : 0);
    add(e, "usage_percent", jnum(usage_percent(n->effective_monitors, limit), 2));
    return e;
}

/* A member whose value is JSON text rendered elsewhere (api_prerendered): json-c writes the
 * bytes as they are.  The text is borrowed; it must outlive the serialisation. */
typedef struct {
    const char *text;
    size_t len;
} raw_json;

static int raw_json_write(json_object *o, struct printbuf *pb, int level, int flags)
{
    (void)level;
    (void)flags;
    const raw_json *r = json_object_get_userdata(o);
    return printbuf_memappend(pb, r->text, (int)r->len);
}

static void raw_json_free(json_object *o, void *userdata)
{
    (void)o;
    free(userdata);
}

static json_object *jraw(const char *text, size_t len)
{
    raw_json *r = malloc(sizeof *r);
    json_object *o = r ? json_object_new_object() : NULL;
    if (!o) {
        free(r);
        return NULL;
    }
    r->text = text;
    r->len = len;
    json_object_set_serializer(o, raw_json_write, r, raw_json_free);
    return o;
}

static void fill_capacity(json_object *o, const kg_snapshot *s, const api_prerendered *pre)
{
    json_object *a = pre && pre->capacity_nodes
                         ? jraw(pre->capacity_nodes, pre->capacity_len)
                         : json_object_new_array_ext(s->n_nodes > 0 ? s->n_nodes : 1);
    long long eff_total = 0, cap_total = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *n = &s->nodes[i];
        if (!(pre && pre->capacity_nodes))
            json_object_array_add(a, api_json_capacity_node(n, s->monitor_limit));
        eff_total += n->effective_monitors;
        if (node_state_placeable(n->state))
            cap_total += node_limit(n, s->monitor_limit);
    }
    add_int(o, "monitor_limit", s->monitor_limit);
    add_int(o, "limit_per_node", s->monitor_limit); /* compat */
    add(o, "nodes", a);
    json_object *t = json_object_new_object();
    add_int(t, "effective", eff_total);
    add_int(t, "capacity", cap_total);
    add(t, "usage_percent", jnum(cap_total > 0 ? 100.0 * (double)eff_total / (double)cap_total
                                               : 0.0, 2));
    add_int(t, "monitors_active", s->monitors_active);
    add_int(t, "monitors_unassigned", s->monitors_unassigned);
    add(o, "total", t);
}

static json_object *nodes_array(const kg_snapshot *s, const api_prerendered *pre)
{
    if (pre && pre->nodes)
        return jraw(pre->nodes, pre->nodes_len);
    json_object *a = json_object_new_array_ext(s->n_nodes > 0 ? s->n_nodes : 1);
    for (int i = 0; i < s->n_nodes; i++)
        json_object_array_add(a, api_json_node(&s->nodes[i], s->monitor_limit));
    return a;
}

/* ------------------------------------------------------------------------------------------
 * Documents
 * ------------------------------------------------------------------------------------------ */

json_object *api_doc_health(const kg_snapshot *s, int64_t now_ms, int *http_status)
{
    json_object *o = json_object_new_object();
    if (!s) {
        *http_status = 503;
        add(o, "status", jstr("starting"));
        add(o, "leader", json_object_new_boolean(false));
        add(o, "db", NULL);
        return o;
    }
    /* The controller answers; a database outage degrades it but does not make it unhealthy:
     * reads keep working from the snapshot and restarting kumaguard would not bring MariaDB
     * back.  See docs/API.md. */
    *http_status = 200;
    add(o, "status", jstr(s->db_ok && !s->history_failing ? "ok" : "degraded"));
    add_bool(o, "leader", s->is_leader);
    add(o, "db", jstr(s->db_ok ? "ok" : "down"));
    add(o, "db_state", jstr_or_null(s->db_state));
    add(o, "db_down_since", jtime(s->db_down_since_ms));
    add(o, "history", jstr(!s->history_failing ? "ok" : "failing"));
    if (s->history_failing)
        add(o, "history_error", jstr_or_null(s->history_error));
    add(o, "db_backend", jstr_or_null(s->db_backend));
    add(o, "instance_id", jstr_or_null(s->instance_id));
    add_int(o, "uptime_seconds", s->started_ms > 0 && now_ms > s->started_ms
                                     ? (now_ms - s->started_ms) / 1000 : 0);
    add_int(o, "snapshot_seq", (int64_t)s->seq);
    add_int(o, "snapshot_age_ms", now_ms > s->built_ms ? now_ms - s->built_ms : 0);
    return o;
}

json_object *api_doc_system_status(const kg_snapshot *s, const kg_config *cfg)
{
    return api_doc_system_status_pre(s, cfg, NULL);
}

json_object *api_doc_system_status_pre(const kg_snapshot *s, const kg_config *cfg,
                                       const api_prerendered *pre)
{
    json_object *o = new_doc(s);
    json_object *c = json_object_new_object();
    add(c, "instance_id", jstr_or_null(s->instance_id));
    add_bool(c, "is_leader", s->is_leader);
    add_int(c, "leader_generation", s->leader_generation);
    add(c, "started_at", jtime(s->started_ms));
    add_int(c, "uptime_seconds",
            s->started_ms > 0 && s->built_ms > s->started_ms ? (s->built_ms - s->started_ms) / 1000
                                                             : 0);
    add(o, "controller", c);
    add(o, "database", database_obj(s));
    add(o, "history", history_obj(s));

    json_object *cl = json_object_new_object();
    add_cluster_summary(cl, s);
    add(o, "cluster", cl);
    add(o, "nodes", nodes_array(s, pre));

    json_object *lb = json_object_new_object();
    fill_load_balancer(lb, s, false);
    add(o, "load_balancer", lb);
    json_object *hc = json_object_new_object();
    fill_health_check(hc, s, cfg, false);
    add(o, "health_check", hc);
    json_object *fd = json_object_new_object();
    fill_fault_detection(fd, s, cfg);
    add(o, "fault_detection", fd);
    json_object *rb = json_object_new_object();
    fill_rebalancing(rb, s, cfg, false);
    add(o, "rebalancing", rb);
    json_object *cap = json_object_new_object();
    fill_capacity(cap, s, pre);
    add(o, "capacity", cap);

    int n = s->n_recent_events < RECENT_IN_SYSTEM_STATUS ? s->n_recent_events
                                                         : RECENT_IN_SYSTEM_STATUS;
    json_object *ev = json_object_new_array_ext(n > 0 ? n : 1);
    for (int i = 0; i < n; i++) /* newest first */
        json_object_array_add(ev, api_json_event(&s->recent_events[s->n_recent_events - 1 - i]));
    add(o, "recent_events", ev);

    /* compat (the Lua version's system-status): timestamp, and `health` as its health module
     * reported it (the cluster verdict and the probe counts) */
    add_compat_timestamp(o, s->built_ms);
    json_object *h = json_object_new_object();
    add(h, "status", jstr(api_cluster_status(s)));
    add_int(h, "nodes_total", s->n_nodes);
    add_int(h, "nodes_online", s->nodes_online);
    add_probe_counts(h, s);
    int64_t last = 0;
    for (int i = 0; i < s->n_nodes; i++)
        if (s->nodes[i].last_probe_ms > last)
            last = s->nodes[i].last_probe_ms;
    add(h, "last_check", jtime(last));
    add(o, "health", h);
    add(o, "setup", setup_obj(s));
    return o;
}

json_object *api_doc_node_status(const kg_snapshot *s)
{
    return api_doc_node_status_pre(s, NULL);
}

json_object *api_doc_node_status_pre(const kg_snapshot *s, const api_prerendered *pre)
{
    json_object *o = new_doc(s);
    json_object *sum = json_object_new_object();
    add_cluster_summary(sum, s);
    add(o, "summary", sum);
    add(o, "nodes", nodes_array(s, pre));
    /* the database is named here too: when it is down, node states are not written and
     * monitors do not move, whatever the nodes say */
    add(o, "database", database_obj(s));
    add(o, "history", history_obj(s));
    add_compat_timestamp(o, s->built_ms);
    return o;
}

json_object *api_doc_load_balancer_status(const kg_snapshot *s)
{
    json_object *o = new_doc(s);
    fill_load_balancer(o, s, true);
    /* compat: what balances, how, the capacity and the cluster it balances over */
    add_compat_timestamp(o, s->built_ms);
    add(o, "load_balancer", jstr("nginx"));
    add(o, "algorithm", jstr("consistent-hash-remote-addr"));
    json_object *cap = json_object_new_object();
    fill_capacity(cap, s, NULL);
    add(o, "capacity", cap);
    json_object *cl = json_object_new_object();
    add_cluster_summary(cl, s);
    add(cl, "routing_mode", jstr(setup_routing_mode(s)));
    add(o, "cluster", cl);
    return o;
}

json_object *api_doc_health_check_status(const kg_snapshot *s, const kg_config *cfg)
{
    json_object *o = new_doc(s);
    fill_health_check(o, s, cfg, true);
    return o;
}

json_object *api_doc_fault_detection_status(const kg_snapshot *s, const kg_config *cfg)
{
    json_object *o = new_doc(s);
    fill_fault_detection(o, s, cfg);
    return o;
}

json_object *api_doc_rebalancing_status(const kg_snapshot *s, const kg_config *cfg)
{
    json_object *o = new_doc(s);
    fill_rebalancing(o, s, cfg, true);
    /* compat: `status` is "running" while an operation runs and "idle" otherwise (whatever
     * the last one's phase), so a script waiting for "idle" ends; `message` in words */
    const kg_rebalance_view *r = &s->rebalance;
    add_compat_timestamp(o, s->built_ms);
    add(o, "status", jstr(r->running ? "running" : "idle"));
    char msg[256];
    if (r->running)
        snprintf(msg, sizeof msg, "%s %s: %d of %d moves", r->operation[0] ? r->operation
                 : "rebalance", r->phase[0] ? r->phase : "running", r->moved, r->total);
    else if (r->operation[0])
        snprintf(msg, sizeof msg, "idle; the last %s ended %s after %d of %d moves%s%.120s",
                 r->operation, r->phase[0] ? r->phase : "done", r->moved, r->total,
                 r->last_error[0] ? ": " : "", r->last_error);
    else
        snprintf(msg, sizeof msg, "idle; no rebalance since kumaguard started");
    add(o, "message", jstr(msg));
    return o;
}

json_object *api_doc_health_status(const kg_snapshot *s)
{
    json_object *o = new_doc(s);
    add_cluster_summary(o, s);
    int64_t last = 0, total = 0, failed = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        if (s->nodes[i].last_probe_ms > last)
            last = s->nodes[i].last_probe_ms;
        total += s->nodes[i].probes_total;
        failed += s->nodes[i].probes_failed;
    }
    add(o, "last_check", jtime(last));
    add_int(o, "probes_total", total);
    add_int(o, "probes_failed", failed);
    add_probe_counts(o, s); /* compat */
    add(o, "database", database_obj(s));
    add(o, "leader", leader_obj(s));
    return o;
}

json_object *api_doc_lb_health(const kg_snapshot *s, int *http_status)
{
    json_object *o = new_doc(s);
    add(o, "status", jstr(api_cluster_status(s)));
    add_int(o, "nodes_total", s->n_nodes);
    add_int(o, "nodes_online", s->nodes_online);
    int routable = count_routable(s);
    add_int(o, "nodes_routable", routable);
    add_bool(o, "panic", s->panic);
    add(o, "nodes", lb_health_nodes(s)); /* with the Lua version's last_seen */
    add_compat_timestamp(o, s->built_ms);
    /* A load balancer or uptime check in front can act on this: nothing to route to. */
    *http_status = routable > 0 ? 200 : 503;
    return o;
}

json_object *api_doc_capacity(const kg_snapshot *s)
{
    json_object *o = new_doc(s);
    fill_capacity(o, s, NULL);
    return o;
}

json_object *api_doc_available_nodes(const kg_snapshot *s)
{
    json_object *o = new_doc(s);
    json_object *a = json_object_new_array();
    int n = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        const kg_node_view *nv = &s->nodes[i];
        if (!node_state_placeable(nv->state) || !nv->host_valid) /* what set-fixed-node accepts */
            continue;
        char url[KG_NODE_ID_MAX + 32];
        snprintf(url, sizeof url, "/lb/fixed-node/%s", nv->id);
        json_object *e = json_object_new_object();
        add(e, "node_id", jstr(nv->id));
        add(e, "name", jstr(nv->name));
        add(e, "status", jstr(node_state_name(nv->state)));
        add_int(e, "monitor_count", nv->effective_monitors);
        add(e, "set_url", jstr(url));
        json_object_array_add(a, e);
        n++;
    }
    add(o, "available_nodes", a);
    add_int(o, "total_count", n);
    add(o, "clear_url", jstr("/lb/clear-fixed-node"));
    return o;
}

const char *api_fixed_node_refusal(const kg_snapshot *s, const char *node, int *http_status)
{
    const kg_node_view *n = snapshot_find_node(s, node);
    if (!n) {
        *http_status = 404;
        return "unknown node";
    }
    if (!node_state_placeable(n->state)) { /* a pin only to a node that exists and is online */
        *http_status = 409;
        return "node is not online (offline, recovering, draining or in maintenance)";
    }
    if (!n->host_valid) {
        *http_status = 409;
        return "node has an invalid host and is never routed";
    }
    *http_status = 200;
    return NULL;
}

json_object *api_doc_fixed_node_status(const kg_snapshot *s, const char *cookie)
{
    json_object *o = new_doc(s);
    add(o, "cookie_name", jstr("KUMA_FIXED_NODE"));
    bool has = cookie && *cookie;
    add_bool(o, "has_fixed_node", has);
    /* Only a well-formed id is echoed; anything else in the cookie is reported as invalid. */
    bool well_formed = has && hostcheck_node_id_valid(cookie);
    add(o, "current_node", has && well_formed ? jstr(cookie) : NULL);
    const char *reason = NULL;
    if (has && !well_formed) {
        reason = "malformed node id";
    } else if (has) {
        int st;
        reason = api_fixed_node_refusal(s, cookie, &st);
    }
    add_bool(o, "is_valid", has && !reason);
    add(o, "invalid_reason", has ? jstr_or_null(reason) : NULL);
    /* compat: the Lua version embedded its cluster status (the /lb/health picture) */
    json_object *cs = json_object_new_object();
    add_compat_timestamp(cs, s->built_ms);
    add(cs, "status", jstr(api_cluster_status(s)));
    add(cs, "nodes", lb_health_nodes(s));
    add(o, "cluster_status", cs);
    return o;
}

json_object *api_doc_history(const kg_event *ev, int n, int limit)
{
    json_object *o = json_object_new_object();
    json_object *a = json_object_new_array_ext(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        json_object_array_add(a, api_json_event(&ev[i]));
    add(o, "events", a);
    add_int(o, "count", n);
    add_int(o, "limit", limit);
    /* A full page may have more behind it: pass next_before as ?before= for the next page. */
    add(o, "next_before", n > 0 && n >= limit ? json_object_new_int64(ev[n - 1].id) : NULL);
    return o;
}

json_object *api_doc_logs(char **lines, int n)
{
    json_object *o = json_object_new_object();
    json_object *a = json_object_new_array_ext(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        json_object_array_add(a, jstr(lines[i]));
    add(o, "lines", a);
    add_int(o, "count", n);
    return o;
}

/* ------------------------------------------------------------------------------------------
 * Ping, first-run setup status, webhook status
 * ------------------------------------------------------------------------------------------ */

json_object *api_doc_ping(int64_t now_ms)
{
    json_object *o = json_object_new_object();
    add(o, "status", jstr("healthy")); /* the Lua version's word; scripts wait for it */
    add_bool(o, "pong", true);
    add(o, "time", jtime(now_ms));
    add_compat_timestamp(o, now_ms);
    add(o, "service", jstr("kumaguard"));
    return o;
}

json_object *api_doc_setup_status(const kg_snapshot *s)
{
    json_object *o = new_doc(s);
    add_compat_timestamp(o, s->built_ms);
    json_object *b = setup_obj(s);
    json_object_object_foreach(b, key, val)
        add(o, key, json_object_get(val));
    json_object_put(b);
    return o;
}

json_object *api_doc_webhook_status(const webhook_sink_status *st, int n)
{
    json_object *o = json_object_new_object();
    json_object *a = json_object_new_array_ext(n > 0 ? n : 1);
    for (int i = 0; i < n; i++) {
        const webhook_sink_status *w = &st[i];
        json_object *e = json_object_new_object();
        add_int(e, "sink", i + 1);
        add(e, "target", jstr(w->target));
        add(e, "format", jstr(webhook_format_name(w->format)));
        json_object *kinds = json_object_new_array();
        for (int k = 0; k < EV_KIND_COUNT; k++)
            if (w->kinds & (1u << k))
                json_object_array_add(kinds, jstr(event_kind_name((kg_event_kind)k)));
        add(e, "events", kinds);
        add_bool(e, "signed", w->signed_);
        add_int(e, "delivered", w->delivered);
        add_int(e, "failures", w->failures);
        add_int(e, "retries", w->retries);
        add_int(e, "given_up", w->given_up);
        add_int(e, "dropped", w->dropped);
        add_int(e, "queued", w->queued);
        add(e, "last_success", jtime(w->last_success_ms));
        add(e, "last_failure", jtime(w->last_failure_ms));
        add(e, "last_error", jstr_or_null(w->last_error));
        json_object_array_add(a, e);
    }
    add(o, "webhooks", a);
    add_int(o, "count", n);
    return o;
}
