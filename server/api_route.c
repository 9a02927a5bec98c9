/* api_route.c — route table and request-input parsing for the HTTP API (see api_route.h).
 *
 * Owns: the mapping (method, path) -> handler and the validation of everything a client
 * controls (path parameters, JSON bodies, query parameters, the Authorization header).
 * Must not: touch sockets, the snapshot, the mailbox or any global state — it is fuzzed. */
#include "api_route.h"

#include "hostcheck.h"

#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "snapshot.h"

/* ------------------------------------------------------------------------------------------
 * Route table
 * ------------------------------------------------------------------------------------------ */

#define M_READ (API_M_GET | API_M_HEAD)

enum { F_AUTH = 1, F_LB_ALIAS = 2 };

typedef struct {
    const char *path;
    api_route_id id;
    unsigned methods;
    unsigned flags;
} route_def;

/* Exact paths.  F_LB_ALIAS: "/api/x" also answers as "/lb/x" (the Lua version's prefix). */
static const route_def routes[] = {
    {"/health", API_R_HEALTH, M_READ, 0},
    {"/metrics", API_R_METRICS, M_READ, 0},
    {"/", API_R_INDEX, M_READ, 0},
    {"/api/system-status", API_R_SYSTEM_STATUS, M_READ, F_LB_ALIAS},
    {"/api/node-status", API_R_NODE_STATUS, M_READ, F_LB_ALIAS},
    {"/api/load-balancer-status", API_R_LB_STATUS, M_READ, F_LB_ALIAS},
    {"/api/health-check-status", API_R_HEALTH_CHECK_STATUS, M_READ, F_LB_ALIAS},
    {"/api/fault-detection-status", API_R_FAULT_STATUS, M_READ, F_LB_ALIAS},
    {"/api/rebalancing-status", API_R_REBALANCING_STATUS, M_READ, F_LB_ALIAS},
    {"/api/health-status", API_R_HEALTH_STATUS, M_READ, F_LB_ALIAS},
    {"/api/failover-history", API_R_FAILOVER_HISTORY, M_READ, F_LB_ALIAS},
    {"/api/events", API_R_EVENTS, M_READ, F_LB_ALIAS},
    {"/api/debug-config", API_R_DEBUG_CONFIG, M_READ, F_LB_ALIAS | F_AUTH},
    {"/api/debug-logs", API_R_DEBUG_LOGS, M_READ, F_LB_ALIAS | F_AUTH},
    {"/api/update-loads", API_R_UPDATE_LOADS, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/trigger-health-check", API_R_TRIGGER_HEALTH_CHECK, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/trigger-rebalancing", API_R_TRIGGER_REBALANCING, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/force-rebalance-all", API_R_FORCE_REBALANCE_ALL, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/cancel-rebalancing", API_R_CANCEL_REBALANCING, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/panic-override", API_R_PANIC_OVERRIDE, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/lb/health", API_R_LB_HEALTH, M_READ, 0},
    {"/lb/capacity", API_R_CAPACITY, M_READ, 0},
    {"/lb/ping", API_R_PING, M_READ, 0},
    {"/lb/available-nodes", API_R_AVAILABLE_NODES, M_READ, 0},
    {"/lb/fixed-node-status", API_R_FIXED_NODE_STATUS, M_READ, 0},
    {"/lb/set-fixed-node", API_R_SET_FIXED_NODE, API_M_POST, 0},
    {"/lb/clear-fixed-node", API_R_CLEAR_FIXED_NODE, M_READ | API_M_POST, 0},
    {"/api/setup-status", API_R_SETUP_STATUS, M_READ, F_LB_ALIAS},
    {"/api/monitors", API_R_MONITORS, M_READ, F_LB_ALIAS},
    {"/api/monitors/move", API_R_MONITOR_MOVE, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/monitors/pin", API_R_MONITOR_PIN, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/monitors/unpin", API_R_MONITOR_UNPIN, API_M_POST, F_LB_ALIAS | F_AUTH},
    {"/api/webhook-status", API_R_WEBHOOK_STATUS, M_READ, F_LB_ALIAS},
};

/* "/<prefix>monitors/<id>/<op>": the single-monitor form of the batch routes above. */
static const struct {
    const char *suffix;
    api_route_id id;
} monitor_actions[] = {
    {"move", API_R_MONITOR_MOVE},
    {"pin", API_R_MONITOR_PIN},
    {"unpin", API_R_MONITOR_UNPIN},
};

static const struct {
    const char *suffix;
    api_route_id id;
} node_actions[] = {
    {"drain", API_R_NODE_DRAIN},
    {"maintenance", API_R_NODE_MAINTENANCE},
    {"enable", API_R_NODE_ENABLE},
};

static const char *const route_names[API_R_COUNT] = {
    [API_R_NONE] = "none",
    [API_R_HEALTH] = "health",
    [API_R_SYSTEM_STATUS] = "system-status",
    [API_R_NODE_STATUS] = "node-status",
    [API_R_LB_STATUS] = "load-balancer-status",
    [API_R_HEALTH_CHECK_STATUS] = "health-check-status",
    [API_R_FAULT_STATUS] = "fault-detection-status",
    [API_R_REBALANCING_STATUS] = "rebalancing-status",
    [API_R_HEALTH_STATUS] = "health-status",
    [API_R_LB_HEALTH] = "lb-health",
    [API_R_CAPACITY] = "capacity",
    [API_R_PING] = "ping",
    [API_R_AVAILABLE_NODES] = "available-nodes",
    [API_R_FIXED_NODE_STATUS] = "fixed-node-status",
    [API_R_FAILOVER_HISTORY] = "failover-history",
    [API_R_METRICS] = "metrics",
    [API_R_EVENTS] = "events",
    [API_R_DEBUG_CONFIG] = "debug-config",
    [API_R_DEBUG_LOGS] = "debug-logs",
    [API_R_UPDATE_LOADS] = "update-loads",
    [API_R_TRIGGER_HEALTH_CHECK] = "trigger-health-check",
    [API_R_TRIGGER_REBALANCING] = "trigger-rebalancing",
    [API_R_FORCE_REBALANCE_ALL] = "force-rebalance-all",
    [API_R_CANCEL_REBALANCING] = "cancel-rebalancing",
    [API_R_NODE_DRAIN] = "drain",
    [API_R_NODE_MAINTENANCE] = "maintenance",
    [API_R_NODE_ENABLE] = "enable",
    [API_R_PANIC_OVERRIDE] = "panic-override",
    [API_R_SET_FIXED_NODE] = "set-fixed-node",
    [API_R_CLEAR_FIXED_NODE] = "clear-fixed-node",
    [API_R_FIXED_NODE_PAGE] = "fixed-node",
    [API_R_INDEX] = "index",
    [API_R_STATIC] = "static",
    [API_R_SETUP_STATUS] = "setup-status",
    [API_R_MONITORS] = "monitors",
    [API_R_MONITOR_MOVE] = "move",
    [API_R_MONITOR_PIN] = "pin",
    [API_R_MONITOR_UNPIN] = "unpin",
    [API_R_WEBHOOK_STATUS] = "webhook-status",
};

const char *api_route_name(api_route_id id)
{
    return (id >= 0 && id < API_R_COUNT && route_names[id]) ? route_names[id] : "none";
}

bool api_route_is_action(api_route_id id)
{
    return id >= API_R_UPDATE_LOADS && id <= API_R_PANIC_OVERRIDE;
}

unsigned api_method_bit(const char *method)
{
    if (!method)
        return API_M_OTHER;
    if (strcmp(method, "GET") == 0)
        return API_M_GET;
    if (strcmp(method, "HEAD") == 0)
        return API_M_HEAD;
    if (strcmp(method, "POST") == 0)
        return API_M_POST;
    return API_M_OTHER;
}

const char *api_allow_header(unsigned allowed, char *buf, size_t len)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{API_M_GET, "GET"}, {API_M_HEAD, "HEAD"}, {API_M_POST, "POST"}};
    size_t off = 0;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(allowed & names[i].bit))
            continue;
        int w = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", names[i].name);
        if (w < 0 || (size_t)w >= len - off)
            break;
        off += (size_t)w;
    }
    return buf;
}

static void set_found(api_match *m, api_route_id id, unsigned methods, unsigned flags,
                      unsigned method)
{
    m->id = id;
    m->allowed = methods;
    m->needs_auth = (flags & F_AUTH) != 0;
    m->status = (methods & method) ? 0 : 405;
}

/* "/<prefix>nodes/<id>/<action>" where prefix is "api/" or "lb/". */
static bool match_node_action(const char *rest, unsigned method, api_match *m)
{
    if (strncmp(rest, "nodes/", 6) != 0)
        return false;
    const char *id = rest + 6;
    const char *slash = strchr(id, '/');
    if (!slash)
        return false;
    const char *action = slash + 1;
    for (size_t i = 0; i < sizeof node_actions / sizeof node_actions[0]; i++) {
        if (strcmp(action, node_actions[i].suffix) != 0)
            continue;
        set_found(m, node_actions[i].id, API_M_POST, F_AUTH, method);
        size_t idlen = (size_t)(slash - id);
        if (!hostcheck_node_id_valid_n(id, idlen)) {
            if (m->status == 0)
                m->status = 400;
            return true;
        }
        memcpy(m->node, id, idlen);
        m->node[idlen] = '\0';
        return true;
    }
    return false;
}

/* "monitors/<id>/<op>" where <id> is a positive decimal monitor id. */
static bool match_monitor_action(const char *rest, unsigned method, api_match *m)
{
    if (strncmp(rest, "monitors/", 9) != 0)
        return false;
    const char *id = rest + 9;
    const char *slash = strchr(id, '/');
    size_t idlen = slash ? (size_t)(slash - id) : 0;
    if (!slash || idlen == 0 || idlen > 10 || id[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < idlen; i++) {
        if (id[i] < '0' || id[i] > '9')
            return false;
        v = v * 10 + (id[i] - '0');
    }
    if (v > INT32_MAX) /* monitor.id is an INT */
        return false;
    for (size_t i = 0; i < sizeof monitor_actions / sizeof monitor_actions[0]; i++) {
        if (strcmp(slash + 1, monitor_actions[i].suffix) != 0)
            continue;
        set_found(m, monitor_actions[i].id, API_M_POST, F_AUTH, method);
        m->monitor_id = v;
        return true;
    }
    return false;
}

void api_route_match(const char *method, const char *path, api_match *m)
{
    memset(m, 0, sizeof *m);
    m->status = 404;
    if (!path || path[0] != '/')
        return;
    unsigned mbit = api_method_bit(method);

    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const route_def *r = &routes[i];
        bool hit = strcmp(path, r->path) == 0;
        /* "/api/x" registered with F_LB_ALIAS also matches "/lb/x". */
        if (!hit && (r->flags & F_LB_ALIAS) && strncmp(path, "/lb/", 4) == 0)
            hit = strcmp(path + 4, r->path + 5) == 0;
        if (hit) {
            set_found(m, r->id, r->methods, r->flags, mbit);
            return;
        }
    }
    if (strncmp(path, "/api/", 5) == 0 && match_node_action(path + 5, mbit, m))
        return;
    if (strncmp(path, "/lb/", 4) == 0 && match_node_action(path + 4, mbit, m))
        return;
    if (strncmp(path, "/api/", 5) == 0 && match_monitor_action(path + 5, mbit, m))
        return;
    if (strncmp(path, "/lb/", 4) == 0 && match_monitor_action(path + 4, mbit, m))
        return;
    if (strncmp(path, "/lb/fixed-node/", 15) == 0) {
        const char *id = path + 15;
        set_found(m, API_R_FIXED_NODE_PAGE, M_READ, 0, mbit);
        if (!hostcheck_node_id_valid(id)) {
            if (m->status == 0)
                m->status = 400;
            return;
        }
        snprintf(m->node, sizeof m->node, "%s", id);
        return;
    }
    if (strncmp(path, "/static/", 8) == 0 && api_static_path_ok(path + 8)) {
        set_found(m, API_R_STATIC, M_READ, 0, mbit);
        snprintf(m->static_rel, sizeof m->static_rel, "%s", path + 8);
        return;
    }
    /* unknown path (including unsafe static paths): 404 */
}

/* ------------------------------------------------------------------------------------------
 * Small validators
 * ------------------------------------------------------------------------------------------ */

static bool static_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~' || c == '+' || c == '@';
}

bool api_static_path_ok(const char *rel)
{
    if (!rel)
        return false;
    size_t len = strnlen(rel, API_STATIC_PATH_MAX + 1);
    if (len == 0 || len > API_STATIC_PATH_MAX)
        return false;
    bool seg_start = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)rel[i];
        if (c == '/') {
            if (seg_start) /* empty segment: "//" or leading "/" */
                return false;
            seg_start = true;
            continue;
        }
        if (seg_start && c == '.') /* ".", "..", hidden files */
            return false;
        if (!static_char(c))
            return false;
        seg_start = false;
    }
    return !seg_start; /* no trailing "/" */
}

const char *api_content_type_for(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"webp", "image/webp"},
        {"ico", "image/x-icon"},
        {"woff", "font/woff"},
        {"woff2", "font/woff2"},
        {"txt", "text/plain; charset=utf-8"},
    };
    const char *dot = path ? strrchr(path, '.') : NULL;
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (dot && (!slash || dot > slash)) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    }
    return "application/octet-stream";
}

bool api_content_type_is_json(const char *value)
{
    if (!value)
        return false;
    while (*value == ' ' || *value == '\t')
        value++;
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;
    if (strncasecmp(value, want, n) != 0)
        return false;
    const char *p = value + n;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0' || *p == ';';
}

/* ------------------------------------------------------------------------------------------
 * JSON bodies
 * ------------------------------------------------------------------------------------------ */

/* Parses exactly one JSON object from body[0..len); NULL when not an object, malformed, nested
 * too deep, or followed by anything but whitespace. */
static json_object *parse_object(const char *body, size_t len)
{
    if (!body || len == 0 || len > (1u << 20))
        return NULL;
    json_tokener *tok = json_tokener_new_ex(16);
    if (!tok)
        return NULL;
    json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    size_t used = (size_t)json_tokener_get_parse_end(tok);
    bool ok = o && json_tokener_get_error(tok) == json_tokener_success &&
              json_object_is_type(o, json_type_object);
    for (size_t i = used; ok && i < len; i++)
        if (!isspace((unsigned char)body[i]))
            ok = false;
    json_tokener_free(tok);
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

int api_parse_fixed_node_body(const char *body, size_t len, char *node, size_t nodelen,
                              char *err, size_t errlen)
{
    if (nodelen)
        node[0] = '\0';
    json_object *o = parse_object(body, len);
    if (!o) {
        snprintf(err, errlen, "body must be a JSON object like {\"node\":\"node1\"}");
        return -1;
    }
    json_object *v = NULL;
    int rc = -1;
    if (!json_object_object_get_ex(o, "node", &v) || !json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "missing string member \"node\"");
    } else {
        const char *s = json_object_get_string(v);
        int slen = json_object_get_string_len(v);
        /* strlen check rejects embedded NULs */
        if (slen < 0 || strlen(s) != (size_t)slen || !hostcheck_node_id_valid(s)) {
            snprintf(err, errlen, "\"node\" must match [A-Za-z0-9_.-]{1,%d}", KG_NODE_ID_MAX);
        } else if ((size_t)slen >= nodelen) {
            snprintf(err, errlen, "node id too long");
        } else {
            memcpy(node, s, (size_t)slen + 1);
            rc = 0;
        }
    }
    json_object_put(o);
    return rc;
}

bool api_parse_confirm_body(const char *body, size_t len, const char *expected)
{
    json_object *o = parse_object(body, len);
    if (!o)
        return false;
    json_object *v = NULL;
    bool ok = json_object_object_get_ex(o, "confirm", &v) &&
              json_object_is_type(v, json_type_string) &&
              (size_t)json_object_get_string_len(v) == strlen(expected) &&
              strcmp(json_object_get_string(v), expected) == 0;
    json_object_put(o);
    return ok;
}

/* ------------------------------------------------------------------------------------------
 * Query parameters
 * ------------------------------------------------------------------------------------------ */

int api_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || strlen(s) > 20)
        return -1;
    const char *p = s;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    if (!*p)
        return -1;
    int64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (neg)
        v = -v;
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Reads exactly n digits. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int api_parse_time_ms(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -1;
    /* plain milliseconds since the epoch (up to year 9999) */
    if (api_parse_int64(s, 0, 253402300799999LL, out) == 0)
        return 0;
    const char *p = s;
    int Y, Mo, D, h, mi, sec, ms = 0;
    if (!digits(&p, 4, &Y) || *p++ != '-' || !digits(&p, 2, &Mo) || *p++ != '-' ||
        !digits(&p, 2, &D))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        p++;
        int n = 0;
        int frac = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 3)
                frac = frac * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0 || n > 9)
            return -1;
        for (int i = n; i < 3; i++)
            frac *= 10;
        ms = frac;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        p++;
        int oh, om;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1; /* a time without a zone is ambiguous: refuse it */
    }
    if (*p != '\0')
        return -1;
    if (Y < 1970 || Mo < 1 || Mo > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || sec > 59)
        return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = Mo - 1, .tm_mday = D,
                    .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    /* timegm normalises 31 February into March: refuse dates that do not exist */
    struct tm back;
    if (!gmtime_r(&t, &back) || back.tm_mday != D || back.tm_mon != Mo - 1)
        return -1;
    int64_t v = (int64_t)t * 1000 + ms - (int64_t)offset_min * 60000;
    if (v < 0)
        return -1;
    *out = v;
    return 0;
}

int api_parse_history_params(const api_history_params *p, events_query *q,
                             char node_buf[KG_NODE_ID_MAX + 1], char *err, size_t errlen)
{
    memset(q, 0, sizeof *q);
    q->kind = -1;
    q->limit = API_HISTORY_DEFAULT_LIMIT;
    node_buf[0] = '\0';
    if (p->node && *p->node) {
        if (!hostcheck_node_id_valid(p->node)) {
            snprintf(err, errlen, "node: expected a node id [A-Za-z0-9_.-]{1,%d}",
                     KG_NODE_ID_MAX);
            return -1;
        }
        snprintf(node_buf, KG_NODE_ID_MAX + 1, "%s", p->node);
        q->node = node_buf;
    }
    if (p->kind && *p->kind) {
        q->kind = event_kind_parse(p->kind);
        if (q->kind < 0) {
            snprintf(err, errlen, "kind: unknown event kind (e.g. failover, revert, rebalance, "
                                  "state_change)");
            return -1;
        }
    }
    if (p->since && *p->since && api_parse_time_ms(p->since, &q->since_ms) != 0) {
        snprintf(err, errlen, "since: expected ISO-8601 UTC time or milliseconds since epoch");
        return -1;
    }
    if (p->until && *p->until && api_parse_time_ms(p->until, &q->until_ms) != 0) {
        snprintf(err, errlen, "until: expected ISO-8601 UTC time or milliseconds since epoch");
        return -1;
    }
    if (q->since_ms && q->until_ms && q->since_ms > q->until_ms) {
        snprintf(err, errlen, "since is after until");
        return -1;
    }
    int64_t v;
    if (p->limit && *p->limit) {
        if (api_parse_int64(p->limit, 1, API_HISTORY_MAX_LIMIT, &v) != 0) {
            snprintf(err, errlen, "limit: expected an integer 1..%d", API_HISTORY_MAX_LIMIT);
            return -1;
        }
        q->limit = (int)v;
    }
    if (p->before && *p->before) {
        if (api_parse_int64(p->before, 1, INT64_MAX, &v) != 0) {
            snprintf(err, errlen, "before: expected a positive event id");
            return -1;
        }
        q->before_id = v;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Authorization and escaping
 * ------------------------------------------------------------------------------------------ */

int api_bearer_check(const char *authorization, const char *token)
{
    if (!authorization)
        return 1;
    const char *p = authorization;
    while (*p == ' ')
        p++;
    if (strncasecmp(p, "Bearer ", 7) != 0)
        return 1;
    p += 7;
    while (*p == ' ')
        p++;
    size_t given_len = strlen(p);
    while (given_len && p[given_len - 1] == ' ')
        given_len--;
    if (given_len == 0)
        return 1;
    /* Constant time in the token's length: every byte of the token is compared whatever the
     * given value is, and a length mismatch is folded into the same accumulator. */
    size_t tlen = strlen(token);
    volatile unsigned char diff = (unsigned char)(given_len != tlen);
    for (size_t i = 0; i < tlen; i++) {
        unsigned char g = i < given_len ? (unsigned char)p[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)token[i]);
    }
    return diff == 0 ? 0 : 2;
}

int api_html_escape(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return -1;
    for (; *s; s++) {
        const char *rep = NULL;
        char one[2] = {*s, '\0'};
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: rep = one; break;
        }
        size_t n = strlen(rep);
        if (o + n >= outlen) {
            out[0] = '\0';
            return -1;
        }
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = '\0';
    return (int)o;
}

/* ------------------------------------------------------------------------------------------
 * Per-monitor operations
 * ------------------------------------------------------------------------------------------ */

int api_monitor_op_kind(api_route_id id)
{
    switch (id) {
    case API_R_MONITOR_MOVE: return MONITOR_OP_MOVE;
    case API_R_MONITOR_PIN: return MONITOR_OP_PIN;
    case API_R_MONITOR_UNPIN: return MONITOR_OP_UNPIN;
    default: return -1;
    }
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* "ids": an array of 1..MONITOR_OPS_MAX_BATCH monitor ids (integers 1..2^31-1), sorted and
 * merged into out. */
static int parse_ids(json_object *v, monitor_op_request *out, char *err, size_t errlen)
{
    if (!json_object_is_type(v, json_type_array)) {
        snprintf(err, errlen, "\"ids\" must be an array of monitor ids");
        return -1;
    }
    size_t n = json_object_array_length(v);
    if (n == 0 || n > MONITOR_OPS_MAX_BATCH) {
        snprintf(err, errlen, "\"ids\" must hold 1 to %d monitor ids", MONITOR_OPS_MAX_BATCH);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        int64_t id = json_object_is_type(e, json_type_int) ? json_object_get_int64(e) : 0;
        if (id < 1 || id > INT32_MAX) {
            snprintf(err, errlen, "\"ids\"[%zu] is not a monitor id (a positive integer)", i);
            return -1;
        }
        out->ids[i] = id;
    }
    qsort(out->ids, n, sizeof out->ids[0], cmp_id);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (w == 0 || out->ids[w - 1] != out->ids[i])
            out->ids[w++] = out->ids[i];
    out->n_ids = w;
    return 0;
}

int api_parse_monitor_op(monitor_op_kind kind, int64_t path_id, const char *body, size_t len,
                         monitor_op_request *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    bool needs_node = kind != MONITOR_OP_UNPIN;
    bool blank = true;
    for (size_t i = 0; body && i < len; i++)
        if (!isspace((unsigned char)body[i]))
            blank = false;
    if (blank && path_id > 0 && !needs_node) {
        out->ids[0] = path_id;
        out->n_ids = 1;
        return 0;
    }
    json_object *o = parse_object(body, len);
    if (!o) {
        snprintf(err, errlen, "body must be a JSON object like %s",
                 path_id > 0 ? "{\"node\":\"node2\"}" : "{\"ids\":[1,2],\"node\":\"node2\"}");
        return -1;
    }
    int rc = -1;
    json_object *v = NULL;
    bool has_ids = json_object_object_get_ex(o, "ids", &v);
    if (path_id > 0 && has_ids) {
        snprintf(err, errlen, "\"ids\" belongs to the batch form POST /api/monitors/%s",
                 kind == MONITOR_OP_MOVE ? "move" : kind == MONITOR_OP_PIN ? "pin" : "unpin");
        goto out;
    }
    if (path_id > 0) {
        out->ids[0] = path_id;
        out->n_ids = 1;
    } else if (!has_ids) {
        snprintf(err, errlen, "missing \"ids\" (an array of monitor ids)");
        goto out;
    } else if (parse_ids(v, out, err, errlen) != 0) {
        goto out;
    }
    if (needs_node) {
        const char *node = NULL;
        if (json_object_object_get_ex(o, "node", &v) && json_object_is_type(v, json_type_string))
            node = json_object_get_string(v);
        if (!node || strlen(node) != (size_t)json_object_get_string_len(v) ||
            !hostcheck_node_id_valid(node)) {
            snprintf(err, errlen, "\"node\" must be a node id [A-Za-z0-9_.-]{1,%d}",
                     KG_NODE_ID_MAX);
            goto out;
        }
        snprintf(out->node, sizeof out->node, "%s", node);
    }
    if (kind == MONITOR_OP_MOVE && json_object_object_get_ex(o, "revert", &v)) {
        if (!json_object_is_type(v, json_type_boolean)) {
            snprintf(err, errlen, "\"revert\" must be true or false");
            goto out;
        }
        out->revert = json_object_get_boolean(v);
    }
    rc = 0;
out:
    json_object_put(o);
    return rc;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static int copy_node_param(const char *v, const char *name, char *dst, char *err, size_t errlen)
{
    if (!v || !*v)
        return 0;
    if (!hostcheck_node_id_valid(v)) {
        snprintf(err, errlen, "%s: expected a node id [A-Za-z0-9_.-]{1,%d}", name,
                 KG_NODE_ID_MAX);
        return -1;
    }
    snprintf(dst, KG_NODE_ID_MAX + 1, "%s", v);
    return 0;
}

static int parse_bool_param(const char *v, const char *name, bool *out, char *err,
                            size_t errlen)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = true;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = false;
    else {
        snprintf(err, errlen, "%s: expected true or false", name);
        return -1;
    }
    return 0;
}

int api_parse_monitors_params(const api_monitors_params *p, api_monitors_filter *f, char *err,
                              size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->active = -1;
    f->live = -1;
    f->limit = API_MONITORS_DEFAULT_LIMIT;
    f->total = true;
    if (copy_node_param(p->node, "node", f->node, err, errlen) != 0 ||
        copy_node_param(p->home, "home", f->home, err, errlen) != 0)
        return -1;
    if (p->q && *p->q) {
        if (strlen(p->q) > API_MONITORS_SEARCH_MAX || !printable(p->q)) {
            snprintf(err, errlen, "q: up to %d printable characters", API_MONITORS_SEARCH_MAX);
            return -1;
        }
        snprintf(f->search, sizeof f->search, "%s", p->q);
    }
    if (p->state && *p->state && strcmp(p->state, "any") != 0) {
        static const struct {
            const char *name;
            int active, live;
            bool unassigned;
        } states[] = {
            {"active", 1, -1, false},  {"inactive", 0, -1, false}, {"running", 1, 1, false},
            {"stranded", 1, 0, false}, {"unassigned", 1, -1, true},
        };
        size_t i = 0;
        while (i < sizeof states / sizeof states[0] && strcmp(states[i].name, p->state) != 0)
            i++;
        if (i == sizeof states / sizeof states[0]) {
            snprintf(err, errlen, "state: expected any, active, inactive, running, stranded or "
                                  "unassigned");
            return -1;
        }
        f->active = states[i].active;
        f->live = states[i].live;
        f->unassigned = states[i].unassigned;
    }
    if (p->override && *p->override && strcmp(p->override, "any") != 0) {
        static const char *const names[] = {"any", "none", "ours", "pin"};
        int k = 1;
        while (k < 4 && strcmp(names[k], p->override) != 0)
            k++;
        if (k == 4) {
            snprintf(err, errlen, "override: expected any, none, ours or pin");
            return -1;
        }
        f->override = k;
    }
    if (p->pinned && *p->pinned) {
        bool pinned;
        if (parse_bool_param(p->pinned, "pinned", &pinned, err, errlen) != 0)
            return -1;
        int want = pinned ? 3 : 4;
        if (f->override && !(f->override == want || (!pinned && f->override != 3))) {
            snprintf(err, errlen, "pinned and override contradict each other");
            return -1;
        }
        if (!f->override)
            f->override = want;
    }
    int64_t v;
    if (p->limit && *p->limit) {
        if (api_parse_int64(p->limit, 1, API_MONITORS_MAX_LIMIT, &v) != 0) {
            snprintf(err, errlen, "limit: expected an integer 1..%d", API_MONITORS_MAX_LIMIT);
            return -1;
        }
        f->limit = (int)v;
    }
    if (p->after && *p->after) {
        if (api_parse_int64(p->after, 0, INT64_MAX, &v) != 0) {
            snprintf(err, errlen, "after: expected a monitor id");
            return -1;
        }
        f->after = v;
    }
    if (p->total && *p->total && parse_bool_param(p->total, "total", &f->total, err, errlen))
        return -1;
    return 0;
}

/* ---- Accept-Encoding ---------------------------------------------------------------------- */

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* q value of one element's parameters (the text after its first ';'): 0 when it says q=0
 * (0, 0., 0.0, ... up to three decimals), 1 otherwise (present and non-zero, or absent). */
static bool q_is_zero(const char *p, const char *end)
{
    while (p < end) {
        while (p < end && (is_space(*p) || *p == ';'))
            p++;
        if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            p += 2;
            if (p >= end || *p != '0')
                return false;
            p++;
            if (p < end && *p == '.')
                for (p++; p < end && *p == '0'; p++)
                    ;
            while (p < end && is_space(*p))
                p++;
            return p == end || *p == ';';
        }
        while (p < end && *p != ';')
            p++;
    }
    return false;
}

bool api_accepts_gzip(const char *h)
{
    if (!h)
        return false;
    int gzip = -1, star = -1; /* -1 not named, 0 refused (q=0), 1 accepted */
    const char *p = h;
    while (*p) {
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = p;
        while (t < e && is_space(*t))
            t++;
        const char *te = t;
        while (te < e && *te != ';' && !is_space(*te))
            te++;
        size_t tl = (size_t)(te - t);
        int ok = q_is_zero(te, e) ? 0 : 1;
        if ((tl == 4 && strncasecmp(t, "gzip", 4) == 0) ||
            (tl == 6 && strncasecmp(t, "x-gzip", 6) == 0))
            gzip = gzip == 1 ? 1 : ok;
        else if (tl == 1 && *t == '*')
            star = ok;
        p = *e ? e + 1 : e;
    }
    return gzip == 1 || (gzip == -1 && star == 1);
}
