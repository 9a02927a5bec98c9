/* config.c — settings: defaults, environment, command line (flag wins), validation, --help.
 *
 * One table describes every setting; parsing, --help and the redacted JSON dump are all driven
 * by it, so a new setting is one line and cannot be forgotten in the help text.
 * Owns: the table and kg_config's heap strings.  Must not: log (errors go back to the caller),
 * or keep globals. */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hostcheck.h"
#include "log.h"
#include "webhook.h"

typedef enum { T_STR, T_INT, T_MS, T_BOOL, T_DOUBLE, T_NODES } opt_type;

typedef struct {
    const char *env;       /* environment variable */
    const char *flag;      /* long flag without "--" */
    opt_type type;
    size_t off;            /* offset in kg_config */
    const char *def;       /* default as text; NULL = unset */
    long long legacy_ms;   /* T_MS: unit of a plain number (1000 = seconds, 1 = ms) */
    double min, max;       /* T_INT, T_MS (in ms), T_DOUBLE */
    bool secret;
    const char *file_env;  /* *_FILE variant for secrets */
    const char *help;
} opt_def;

#define O(f) offsetof(kg_config, f)
static const opt_def opts[] = {
    {"DB_HOST", "db-host", T_STR, O(db_host), NULL, 0, 0, 0, false, NULL,
     "MariaDB host; a path starting with / is a unix socket; unset = embedded SQLite"},
    {"DB_PORT", "db-port", T_INT, O(db_port), "3306", 0, 1, 65535, false, NULL, "MariaDB port"},
    {"DB_USER", "db-user", T_STR, O(db_user), "kuma", 0, 0, 0, false, NULL, "MariaDB user"},
    {"DB_PASSWORD", "db-password", T_STR, O(db_password), NULL, 0, 0, 0, true,
     "DB_PASSWORD_FILE", "MariaDB password (or DB_PASSWORD_FILE)"},
    {"DB_NAME", "db-name", T_STR, O(db_name), "kuma", 0, 0, 0, false, NULL, "MariaDB database"},
    {"DB_TIMEOUT", "db-timeout", T_MS, O(db_timeout_ms), "5000", 1, 100, 600000, false, NULL,
     "connect/read timeout (plain number = ms)"},
    {"KUMAGUARD_SQLITE_PATH", "sqlite-path", T_STR, O(sqlite_path), NULL, 0, 0, 0, false, NULL,
     "embedded cluster database when DB_HOST is unset (default <state dir>/cluster.db)"},
    {"KUMAGUARD_INIT_SCHEMA", "init-schema", T_BOOL, O(init_schema), "false", 0, 0, 0, false,
     NULL, "create a minimal node/monitor schema on MariaDB (tests and trials)"},
    {"KUMAGUARD_STATE_DIR", "state-dir", T_STR, O(state_dir), "./kumaguard-state", 0, 0, 0,
     false, NULL, "local state cache (SQLite), history, last good nginx file"},
    {"KUMAGUARD_LISTEN", "listen", T_STR, O(listen), "127.0.0.1:8080", 0, 0, 0, false, NULL,
     "API and dashboard address host:port"},
    {"KUMAGUARD_API_TOKEN", "api-token", T_STR, O(api_token), NULL, 0, 0, 0, true,
     "KUMAGUARD_API_TOKEN_FILE", "bearer token for actions; unset = actions only from loopback"},
    {"KUMAGUARD_WEB_DIR", "web-dir", T_STR, O(web_dir), KG_DEFAULT_WEB_DIR, 0, 0, 0, false, NULL,
     "directory holding the dashboard (templates/ and static/)"},
    {"KUMAGUARD_HTTP_THREADS", "http-threads", T_INT, O(http_threads), "2", 0, 1, 64, false,
     NULL, "HTTP worker threads"},
    {"KUMAGUARD_HTTP_MAX_CONNECTIONS", "http-max-connections", T_INT, O(http_max_connections),
     "512", 0, 8, 1000000, false, NULL,
     "open HTTP connections in total; further clients wait in the listen queue"},
    {"KUMAGUARD_HTTP_MAX_PER_CLIENT", "http-max-per-client", T_INT, O(http_max_per_client),
     "32", 0, 1, 1000000, false, NULL,
     "open HTTP connections per client address (IPv6: per /64); more are closed at once; "
     "trusted proxies count only against the total"},
    {"KUMAGUARD_HTTP_IDLE_TIMEOUT", "http-idle-timeout", T_MS, O(http_idle_timeout_ms), "30",
     1000, 1000, 3600000, false, NULL,
     "a connection silent this long (also while sending its request) is closed (seconds)"},
    {"KUMAGUARD_EVENT_STREAMS", "event-streams", T_INT, O(event_streams_max), "64", 0, 1,
     100000, false, NULL, "open /api/events streams in total"},
    {"KUMAGUARD_EVENT_STREAMS_PER_CLIENT", "event-streams-per-client", T_INT,
     O(event_streams_per_client), "8", 0, 1, 100000, false, NULL,
     "open /api/events streams per client (behind a trusted proxy: per forwarded address)"},
    {"KUMAGUARD_TRUSTED_PROXIES", "trusted-proxies", T_STR, O(trusted_proxies), NULL, 0, 0, 0,
     false, NULL, "reverse proxies (CIDR list) whose X-Forwarded-For names the client; "
                  "unset = none"},
    {"KUMAGUARD_LOG_LEVEL", "log-level", T_STR, O(log_level), "info", 0, 0, 0, false, NULL,
     "error, warn, info or debug"},
    {"KUMAGUARD_INSTANCE_ID", "instance-id", T_STR, O(instance_id), NULL, 0, 0, 0, false, NULL,
     "name of this controller in the leader lease (default hostname:pid)"},
    {"KUMAGUARD_NODES", "node", T_NODES, 0, NULL, 0, 0, 0, false, NULL,
     "static nodes id=host:port[,id=host:port...]; the flag is repeatable"},
    {"HEALTH_CHECK_INTERVAL", "health-interval", T_MS, O(health_interval_ms), "30", 1000, 50,
     86400000, false, NULL, "probe interval (plain number = seconds)"},
    {"HEALTH_CHECK_FAST_INTERVAL", "health-fast-interval", T_MS, O(health_fast_interval_ms), "2",
     1000, 20, 86400000, false, NULL, "probe interval while a node is in transition (seconds)"},
    {"HEALTH_CHECK_TIMEOUT", "health-timeout", T_MS, O(health_timeout_ms), "5000", 1, 10, 600000,
     false, NULL, "probe timeout (plain number = ms)"},
    {"HEALTH_CHECK_PATH", "health-path", T_STR, O(health_path), "/api/v1/health", 0, 0, 0, false,
     NULL, "probe path"},
    {"HEALTH_CHECK_EXPECTED_STATUS", "health-expected-status", T_INT, O(health_expected_status),
     "200", 0, 100, 599, false, NULL, "HTTP status of a healthy node"},
    {"HEALTH_CHECK_FALL", "fall", T_INT, O(fall), "3", 0, 1, 100, false, NULL,
     "consecutive failures that take a node offline"},
    {"HEALTH_CHECK_RISE", "rise", T_INT, O(rise), "3", 0, 1, 100, false, NULL,
     "consecutive successes that bring a node back"},
    {"KUMAGUARD_PANIC_SHARE", "panic-share", T_DOUBLE, O(panic_share), "0.5", 0, 0, 1, false,
     NULL, "panic guard: more than this share of nodes failing (and at least 2) = no moves; "
           "every node failing always is"},
    {"KUMAGUARD_PANIC_MAX_HOLD", "panic-max-hold", T_MS, O(panic_max_hold_ms), "0", 1000, 0,
     86400000, false, NULL, "panic guard: after holding this long, let failing nodes' monitors "
                            "move one node at a time; 0 = only an operator can (seconds)"},
    {"KUMAGUARD_PANIC_RELEASE_INTERVAL", "panic-release-interval", T_MS,
     O(panic_release_interval_ms), "60", 1000, 1000, 86400000, false, NULL,
     "panic guard: after the max hold, one more failing node every interval (seconds)"},
    {"KUMAGUARD_NODE_NETWORKS", "node-networks", T_STR, O(node_networks), NULL, 0, 0, 0, false,
     NULL, "networks (CIDR list) nodes may be probed at and sent KUMA_API_KEY; unset = any "
           "address but link-local, multicast and the database's own host:port"},
    {"MONITOR_LIMIT_PER_NODE", "monitor-limit", T_INT, O(monitor_limit), "1000", 0, 1,
     100000000, false, NULL, "capacity per node"},
    {"RECOVERY_HOLD_DOWN", "recovery-hold-down", T_MS, O(recovery_hold_down_ms), "30", 1000, 0,
     86400000, false, NULL, "stable time before monitors return to a recovered node (seconds)"},
    {"RECOVERY_BATCH_SIZE", "recovery-batch-size", T_INT, O(revert_batch_size), "500", 0, 1,
     10000000, false, NULL, "monitors returned home per batch"},
    {"RECOVERY_BATCH_INTERVAL", "recovery-batch-interval", T_MS, O(revert_batch_interval_ms),
     "1", 1000, 0, 3600000, false, NULL, "pause between return batches (seconds)"},
    {"REBALANCE_TOLERANCE", "rebalance-tolerance", T_DOUBLE, O(balance_tolerance), "0.1", 0,
     0, 1, false, NULL, "rebalance brings every online node within mean*(1±tolerance)"},
    {"REBALANCE_AUTO_SPREAD", "rebalance-auto-spread", T_DOUBLE, O(auto_rebalance_spread), "0",
     0, 0, 100, false, NULL, "auto rebalance when (max-min)/mean exceeds this; 0 = off"},
    {"MOVE_BATCH_SIZE", "move-batch-size", T_INT, O(move_batch_size), "5000", 0, 1, 10000000,
     false, NULL, "monitors changed per transaction in rebalancing"},
    {"REBALANCE_BATCH_INTERVAL", "rebalance-batch-interval", T_MS, O(move_batch_interval_ms),
     "200ms", 1, 0, 3600000, false, NULL, "pause between rebalance batches (plain = ms)"},
    {"KUMAGUARD_REFRESH_INTERVAL", "refresh-interval", T_MS, O(refresh_interval_ms), "10", 1000,
     100, 86400000, false, NULL, "how often monitor counts are re-read (seconds)"},
    {"KUMAGUARD_LEASE_TTL", "lease-ttl", T_MS, O(lease_ttl_ms), "10", 1000, 1000, 3600000, false,
     NULL, "leader lease renewal period (seconds)"},
    {"DB_RETRY_MAX", "db-retry-max", T_MS, O(db_retry_max_ms), "4s", 1, 500, 3600000, false,
     NULL, "longest pause between database reconnect attempts (plain = ms)"},
    {"NGINX_INCLUDE_PATH", "nginx-include", T_STR, O(nginx_include), NULL, 0, 0, 0, false, NULL,
     "file kumaguard renders; unset = no nginx feed"},
    {"NGINX_TEMPLATE", "nginx-template", T_STR, O(nginx_template), NULL, 0, 0, 0, false, NULL,
     "template for the include (default <web dir>/templates/nginx-upstream.conf.tmpl)"},
    {"NGINX_TEST_CMD", "nginx-test-cmd", T_STR, O(nginx_test_cmd), "nginx -t", 0, 0, 0, false,
     NULL, "command that validates nginx configuration"},
    {"NGINX_RELOAD_CMD", "nginx-reload-cmd", T_STR, O(nginx_reload_cmd), "nginx -s reload", 0, 0,
     0, false, NULL, "command that reloads nginx"},
    {"NGINX_RELOAD_MIN_GAP", "nginx-reload-min-gap", T_MS, O(nginx_reload_min_gap_ms), "1000", 1,
     0, 3600000, false, NULL, "minimum time between reloads; bursts coalesce (plain = ms)"},
    {"KUMA_API_KEY", "kuma-api-key", T_STR, O(kuma_api_key), NULL, 0, 0, 0, true,
     "KUMA_API_KEY_FILE", "Authorization for the nodes' reconcile endpoint; unset = no nudge"},
    {"KUMA_RECONCILE_PATH", "kuma-reconcile-path", T_STR, O(reconcile_path),
     "/api/v1/reconcile-monitors", 0, 0, 0, false, NULL, "reconcile endpoint path on the nodes"},
    {"KUMA_RECONCILE_BASE", "kuma-reconcile-base", T_MS, O(reconcile_base_ms), "1000", 1, 10,
     600000, false, NULL, "worst case of a reconcile call with nothing to do (plain = ms)"},
    {"KUMA_RECONCILE_START_COST", "kuma-reconcile-start-cost", T_MS, O(reconcile_start_ms),
     "320", 1, 0, 600000, false, NULL,
     "worst case per monitor a node starts in a reconcile (plain = ms)"},
    {"KUMA_RECONCILE_STOP_COST", "kuma-reconcile-stop-cost", T_MS, O(reconcile_stop_ms), "160",
     1, 0, 600000, false, NULL, "worst case per monitor a node stops (plain = ms)"},
    {"KUMA_RECONCILE_TIMEOUT_MAX", "kuma-reconcile-timeout-max", T_MS,
     O(reconcile_timeout_max_ms), "10m", 1, 1000, 86400000, false, NULL,
     "cap on one reconcile call's deadline (plain = ms)"},
    {"KUMA_CRON_SKEW", "kuma-cron-skew", T_MS, O(kuma_cron_skew_ms), "2s", 1, 0, 20000, false,
     NULL, "how far a node's clock may be from ours: no call within this of its :00 cron "
           "(plain = ms)"},
    {"KUMA_RECONCILE_BUDGET", "kuma-reconcile-budget", T_INT, O(reconcile_budget), "30", 0, 1,
     128, false, NULL, "reconcile calls per node per 15 minutes (the node's API_RATE_LIMIT "
                       "counts them with proxied users behind the same address)"},
    {"KUMA_RECONCILE_PACING", "kuma-reconcile-pacing", T_BOOL, O(reconcile_pacing), "true", 0,
     0, 0, false, NULL, "give a node no more moves than it can start before its next cron"},
    {"KUMAGUARD_WEBHOOK_URL", "webhook-url", T_STR, O(webhook_url), NULL, 0, 0, 0, true,
     "KUMAGUARD_WEBHOOK_URL_FILE", "http(s) URL events are POSTed to; unset = no webhook"},
    {"KUMAGUARD_WEBHOOK_SECRET", "webhook-secret", T_STR, O(webhook_secret), NULL, 0, 0, 0, true,
     "KUMAGUARD_WEBHOOK_SECRET_FILE", "HMAC-SHA256 key for X-Kumaguard-Signature; unset = "
     "unsigned"},
    {"KUMAGUARD_WEBHOOK_EVENTS", "webhook-events", T_STR, O(webhook_events),
     KG_WEBHOOK_DEFAULT_EVENTS, 0, 0, 0, false, NULL, "event kinds sent (comma-separated, or "
     "all)"},
    {"KUMAGUARD_WEBHOOK_FORMAT", "webhook-format", T_STR, O(webhook_format), "json", 0, 0, 0,
     false, NULL, "payload: json, slack or discord"},
    {"KUMAGUARD_WEBHOOK2_URL", "webhook2-url", T_STR, O(webhook2_url), NULL, 0, 0, 0, true,
     "KUMAGUARD_WEBHOOK2_URL_FILE", "a second webhook (e.g. chat beside an incident tool)"},
    {"KUMAGUARD_WEBHOOK2_SECRET", "webhook2-secret", T_STR, O(webhook2_secret), NULL, 0, 0, 0,
     true, "KUMAGUARD_WEBHOOK2_SECRET_FILE", "HMAC-SHA256 key of the second webhook"},
    {"KUMAGUARD_WEBHOOK2_EVENTS", "webhook2-events", T_STR, O(webhook2_events),
     KG_WEBHOOK_DEFAULT_EVENTS, 0, 0, 0, false, NULL, "event kinds of the second webhook"},
    {"KUMAGUARD_WEBHOOK2_FORMAT", "webhook2-format", T_STR, O(webhook2_format), "json", 0, 0, 0,
     false, NULL, "payload of the second webhook: json, slack or discord"},
    {"KUMAGUARD_WEBHOOK_TIMEOUT", "webhook-timeout", T_MS, O(webhook_timeout_ms), "5000", 1, 100,
     600000, false, NULL, "time a receiver has to answer one delivery (plain number = ms)"},
    {"KUMAGUARD_WEBHOOK_RETRY_WINDOW", "webhook-retry-window", T_MS, O(webhook_retry_window_ms),
     "15m", 1000, 1000, 86400000, false, NULL, "failed deliveries are retried (1 s, 2 s, 4 s "
     "... 60 s apart) for this long (plain number = seconds)"},
    {"KUMAGUARD_WEBHOOK_QUEUE", "webhook-queue", T_INT, O(webhook_queue), "1000", 0, 1, 1000000,
     false, NULL, "events waiting per webhook; when full the oldest is dropped"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

static int errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

long long config_parse_duration_ms(const char *s, long long legacy_unit_ms)
{
    if (!s || !*s)
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v))
        return -1;
    double mult;
    if (*end == 0)
        mult = (double)legacy_unit_ms;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    double ms = v * mult;
    if (ms > (double)INT_MAX)
        return -1;
    return (long long)(ms + 0.5);
}

int config_parse_nodes(kg_config *cfg, const char *s, char *err, size_t errlen)
{
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[KG_NODE_ID_MAX + KG_HOST_MAX + 4];
        if (len == 0 || len >= sizeof item)
            return errf(err, errlen, "KUMAGUARD_NODES / --node: bad entry '%.*s' "
                        "(expected id=host:port)", (int)(len > 80 ? 80 : len), p);
        memcpy(item, p, len);
        item[len] = 0;
        char *eq = strchr(item, '=');
        if (!eq)
            return errf(err, errlen, "KUMAGUARD_NODES / --node: '%s' is not id=host:port",
                        item);
        *eq = 0;
        char hosterr[64];
        if (!hostcheck_node_id_valid(item))
            return errf(err, errlen, "KUMAGUARD_NODES / --node: node id '%s' must be 1-50 of "
                        "[A-Za-z0-9_.-]", item);
        if (!hostcheck_valid(eq + 1, hosterr, sizeof hosterr))
            return errf(err, errlen, "KUMAGUARD_NODES / --node: host of '%s': %s (expected "
                        "host:port)", item, hosterr);
        if (cfg->n_static_nodes >= KG_MAX_STATIC_NODES)
            return errf(err, errlen, "KUMAGUARD_NODES / --node: more than %d nodes",
                        KG_MAX_STATIC_NODES);
        kg_static_node *n = &cfg->static_nodes[cfg->n_static_nodes];
        int dup = -1;
        for (int i = 0; i < cfg->n_static_nodes; i++)
            if (strcmp(cfg->static_nodes[i].id, item) == 0)
                dup = i;
        if (dup >= 0)
            n = &cfg->static_nodes[dup];
        else
            cfg->n_static_nodes++;
        snprintf(n->id, sizeof n->id, "%.50s", item);
        snprintf(n->host, sizeof n->host, "%.255s", eq + 1);
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

static char *read_secret_file(const char *path, const char *name, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        errf(err, errlen, "%s: cannot read %s: %s", name, path, strerror(errno));
        return NULL;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int read_err = ferror(f) ? errno : 0;
    fclose(f);
    if (read_err) { /* e.g. a directory where Docker found no file to bind-mount */
        errf(err, errlen, "%s: cannot read %s: %s", name, path, strerror(read_err));
        return NULL;
    }
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    char *s = strdup(buf);
    if (!s)
        errf(err, errlen, "%s: out of memory", name);
    return s;
}

/* Applies one textual value to the setting `o`.  `src` names where it came from. */
static int set_value(kg_config *cfg, const opt_def *o, const char *val, const char *src,
                     char *err, size_t errlen)
{
    char *base = (char *)cfg;
    char range[96];
    switch (o->type) {
    case T_STR: {
        char **slot = (char **)(base + o->off);
        char *dup = strdup(val);
        if (!dup)
            return errf(err, errlen, "%s: out of memory", src);
        free(*slot);
        *slot = dup;
        return 0;
    }
    case T_INT: {
        errno = 0;
        char *end;
        long v = strtol(val, &end, 10);
        snprintf(range, sizeof range, "an integer from %.0f to %.0f", o->min, o->max);
        if (errno || end == val || *end || v < o->min || v > o->max)
            return errf(err, errlen, "%s: invalid value '%s' (expected %s)", src, val, range);
        *(int *)(base + o->off) = (int)v;
        return 0;
    }
    case T_MS: {
        long long v = config_parse_duration_ms(val, o->legacy_ms);
        snprintf(range, sizeof range, "a duration like 500ms, 2s, 1m or a plain number in %s, "
                 "from %.0fms to %.0fms", o->legacy_ms == 1000 ? "seconds" : "milliseconds",
                 o->min, o->max);
        if (v < 0 || v < o->min || v > o->max)
            return errf(err, errlen, "%s: invalid value '%s' (expected %s)", src, val, range);
        *(int *)(base + o->off) = (int)v;
        return 0;
    }
    case T_BOOL: {
        bool v;
        if (!strcasecmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes") ||
            !strcasecmp(val, "on"))
            v = true;
        else if (!strcasecmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "no") ||
                 !strcasecmp(val, "off") || !*val)
            v = false;
        else
            return errf(err, errlen, "%s: invalid value '%s' (expected %s)", src, val,
                        "true or false");
        *(bool *)(base + o->off) = v;
        return 0;
    }
    case T_DOUBLE: {
        errno = 0;
        char *end;
        double v = strtod(val, &end);
        snprintf(range, sizeof range, "a number from %g to %g", o->min, o->max);
        if (errno || end == val || *end || !isfinite(v) || v < o->min || v > o->max)
            return errf(err, errlen, "%s: invalid value '%s' (expected %s)", src, val, range);
        *(double *)(base + o->off) = v;
        return 0;
    }
    case T_NODES:
        return config_parse_nodes(cfg, val, err, errlen);
    }
    return -1;
}

static const char *env_get(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "kumaguard — health checks, failover and nginx feed for a multi-node Uptime Kuma "
            "cluster\n\n"
            "Usage: kumaguard [--flag value ...]\n"
            "Every setting is an environment variable and a flag; the flag wins.\n"
            "Durations take 500ms, 2s, 1m, 1h or a plain number in the unit shown.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *o = &opts[i];
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s", o->flag, o->type == T_BOOL ? "" : " VALUE");
        fprintf(out, "  %-34s %s%s%s\n", flag, o->env, o->file_env ? ", " : "",
                o->file_env ? o->file_env : "");
        fprintf(out, "  %-34s   %s (default: %s)\n", "", o->help,
                o->def ? o->def : "unset");
    }
    fprintf(out, "  %-34s show this help\n  %-34s show the version\n", "--help", "--version");
}

static void config_defaults(kg_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char err[64];
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].def)
            set_value(cfg, &opts[i], opts[i].def, "default", err, sizeof err);
}

static const opt_def *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].flag) == len && strncmp(opts[i].flag, name, len) == 0)
            return &opts[i];
    return NULL;
}

/* The webhook settings of both sinks (webhook.h parses them the same way at start). */
static int check_webhooks(const kg_config *cfg, char *err, size_t errlen)
{
    const struct {
        const char *prefix, *url, *events, *format;
    } sinks[] = {
        {"KUMAGUARD_WEBHOOK", cfg->webhook_url, cfg->webhook_events, cfg->webhook_format},
        {"KUMAGUARD_WEBHOOK2", cfg->webhook2_url, cfg->webhook2_events, cfg->webhook2_format},
    };
    for (size_t i = 0; i < sizeof sinks / sizeof sinks[0]; i++) {
        char why[160], target[160];
        uint32_t mask;
        webhook_format f;
        /* the URL may hold a credential: the message names the setting, not the value */
        if (sinks[i].url && webhook_parse_url(sinks[i].url, target, sizeof target, why,
                                              sizeof why) != 0)
            return errf(err, errlen, "%s_URL: invalid value (%s)", sinks[i].prefix, why);
        if (webhook_parse_kinds(sinks[i].events, &mask, why, sizeof why) != 0)
            return errf(err, errlen, "%s_EVENTS: invalid value '%s' (%s; expected kinds like "
                        "%s, or all)", sinks[i].prefix, sinks[i].events, why,
                        KG_WEBHOOK_DEFAULT_EVENTS);
        if (webhook_parse_format(sinks[i].format, &f) != 0)
            return errf(err, errlen, "%s_FORMAT: invalid value '%s' (expected json, slack or "
                        "discord)", sinks[i].prefix, sinks[i].format);
    }
    return 0;
}

/* Derived defaults and cross-setting checks, once everything is parsed. */
static int config_finish(kg_config *cfg, char *err, size_t errlen)
{
    char buf[4096];
    if (!cfg->sqlite_path) {
        snprintf(buf, sizeof buf, "%s/cluster.db", cfg->state_dir);
        cfg->sqlite_path = strdup(buf);
    }
#ifdef KG_SOURCE_WEB_DIR
    /* Not set by the user: the installed web files, or — a build tree that was never
     * installed — the source tree's. */
    if (strcmp(cfg->web_dir, KG_DEFAULT_WEB_DIR) == 0 &&
        access(KG_DEFAULT_WEB_DIR "/templates", R_OK) != 0) {
        free(cfg->web_dir);
        cfg->web_dir = strdup(KG_SOURCE_WEB_DIR);
        if (!cfg->web_dir)
            return errf(err, errlen, "out of memory");
    }
#endif
    if (!cfg->nginx_template) {
        snprintf(buf, sizeof buf, "%s/templates/nginx-upstream.conf.tmpl", cfg->web_dir);
        cfg->nginx_template = strdup(buf);
    }
    if (!cfg->instance_id) {
        char host[256] = "kumaguard";
        gethostname(host, sizeof host - 1);
        snprintf(buf, sizeof buf, "%s:%ld", host, (long)getpid());
        cfg->instance_id = strdup(buf);
    }
    if (!cfg->sqlite_path || !cfg->nginx_template || !cfg->instance_id)
        return errf(err, errlen, "out of memory");
    if (log_parse_level(cfg->log_level) < 0)
        return errf(err, errlen, "KUMAGUARD_LOG_LEVEL / --log-level: invalid value '%s' "
                    "(expected error, warn, info or debug)", cfg->log_level);
    if (cfg->health_path[0] != '/' || strpbrk(cfg->health_path, " \r\n\t"))
        return errf(err, errlen, "HEALTH_CHECK_PATH / --health-path: invalid value '%s' "
                    "(expected a path starting with /)", cfg->health_path);
    if (cfg->reconcile_path[0] != '/' || strpbrk(cfg->reconcile_path, " \r\n\t"))
        return errf(err, errlen, "KUMA_RECONCILE_PATH / --kuma-reconcile-path: invalid value "
                    "'%s' (expected a path starting with /)", cfg->reconcile_path);
    if (!strchr(cfg->listen, ':'))
        return errf(err, errlen, "KUMAGUARD_LISTEN / --listen: invalid value '%s' (expected "
                    "host:port)", cfg->listen);
    if (cfg->api_token && strlen(cfg->api_token) < 8)
        return errf(err, errlen, "KUMAGUARD_API_TOKEN: too short (expected at least 8 "
                    "characters)");
    char why[160];
    if (netpolicy_parse_cidrs(cfg->node_networks, &cfg->node_policy.allowed, why,
                              sizeof why) != 0)
        return errf(err, errlen, "KUMAGUARD_NODE_NETWORKS / --node-networks: %s", why);
    netpolicy_set_db(&cfg->node_policy, cfg->db_host, cfg->db_port);
    if (netpolicy_parse_cidrs(cfg->trusted_proxies, &cfg->trusted_proxy_nets, why,
                              sizeof why) != 0)
        return errf(err, errlen, "KUMAGUARD_TRUSTED_PROXIES / --trusted-proxies: %s", why);
    /* A Kuma node takes any Authorization that is not "Bearer ..." as its API key; a Bearer
     * value is refused (401) on every call.  Still allowed (a node might change), but said. */
    if (cfg->kuma_api_key && strncasecmp(cfg->kuma_api_key, "Bearer ", 7) == 0 &&
        cfg->n_warnings < KG_CONFIG_MAX_WARNINGS)
        snprintf(cfg->warnings[cfg->n_warnings++], sizeof cfg->warnings[0],
                 "KUMA_API_KEY starts with 'Bearer ': a Kuma node answers such a key with 401 "
                 "on every reconcile call; give the key alone");
    return check_webhooks(cfg, err, errlen);
}

/* A secret on the command line is readable by every local user (ps, /proc/PID/cmdline) for
 * as long as the process runs.  It still works — refusing it would break existing scripts —
 * but the caller logs this. */
static void warn_secret_flag(kg_config *cfg, const opt_def *o)
{
    for (int i = 0; i < cfg->n_warnings; i++)
        if (strstr(cfg->warnings[i], o->flag))
            return;
    if (cfg->n_warnings >= KG_CONFIG_MAX_WARNINGS)
        return;
    snprintf(cfg->warnings[cfg->n_warnings++], sizeof cfg->warnings[0],
             "--%s was given on the command line, where every local user can read it (ps, "
             "/proc/<pid>/cmdline); set %s or %s instead", o->flag, o->env, o->file_env);
}

int config_load(kg_config *cfg, int argc, char **argv, char **envp, FILE *out, char *err,
                size_t errlen)
{
    config_defaults(cfg);
    char src[128];
    /* environment first */
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *o = &opts[i];
        const char *v = env_get(envp, o->env);
        if (o->file_env) {
            const char *path = env_get(envp, o->file_env);
            if (path && *path && (!v || !*v)) {
                char *s = read_secret_file(path, o->file_env, err, errlen);
                if (!s)
                    return -1;
                char **slot = (char **)((char *)cfg + o->off);
                free(*slot);
                *slot = NULL;
                if (*s) /* an empty secret file means "unset", not an empty secret */
                    *slot = s;
                else
                    free(s);
                continue;
            }
        }
        if (v && (*v || o->type == T_STR)) {
            if (o->type == T_STR && !*v)
                continue; /* empty string env = unset */
            snprintf(src, sizeof src, "%s", o->env);
            if (set_value(cfg, o, v, src, err, errlen) != 0)
                return -1;
        }
    }
    /* then flags; the first --node on the command line replaces KUMAGUARD_NODES */
    bool nodes_from_flags = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            config_print_help(out);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            fprintf(out, "kumaguard 0.1.0\n");
            return 1;
        }
        if (strncmp(a, "--", 2) != 0)
            return errf(err, errlen, "unexpected argument '%s' (see --help)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_def *o = find_flag(name, nlen);
        if (!o)
            return errf(err, errlen, "unknown flag '%s' (see --help)", a);
        const char *val;
        if (eq)
            val = eq + 1;
        else if (o->type == T_BOOL)
            val = "true";
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return errf(err, errlen, "--%s needs a value", o->flag);
        if (o->type == T_NODES && !nodes_from_flags) {
            nodes_from_flags = true;
            cfg->n_static_nodes = 0;
        }
        snprintf(src, sizeof src, "--%s", o->flag);
        if (set_value(cfg, o, val, src, err, errlen) != 0)
            return -1;
        if (o->secret)
            warn_secret_flag(cfg, o);
    }
    return config_finish(cfg, err, errlen) == 0 ? 0 : -1;
}

void config_free(kg_config *cfg)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].type == T_STR)
            free(*(char **)((char *)cfg + opts[i].off));
    memset(cfg, 0, sizeof *cfg);
}

char *config_to_json_redacted(const kg_config *cfg)
{
    json_object *root = json_object_new_object();
    const char *base = (const char *)cfg;
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *o = &opts[i];
        json_object *v = NULL;
        switch (o->type) {
        case T_STR: {
            const char *s = *(char *const *)(base + o->off);
            if (s)
                v = json_object_new_string(o->secret ? "(redacted)" : s);
            break;
        }
        case T_INT:
        case T_MS:
            v = json_object_new_int(*(const int *)(base + o->off));
            break;
        case T_BOOL:
            v = json_object_new_boolean(*(const bool *)(base + o->off));
            break;
        case T_DOUBLE:
            v = json_object_new_double(*(const double *)(base + o->off));
            break;
        case T_NODES: {
            v = json_object_new_array();
            for (int n = 0; n < cfg->n_static_nodes; n++) {
                json_object *node = json_object_new_object();
                json_object_object_add(node, "id",
                                       json_object_new_string(cfg->static_nodes[n].id));
                json_object_object_add(node, "host",
                                       json_object_new_string(cfg->static_nodes[n].host));
                json_object_array_add(v, node);
            }
            break;
        }
        }
        json_object_object_add(root, o->env, v);
    }
    char *s = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    return s;
}
