/* fuzz_api_router.c — libFuzzer target for everything the HTTP API parses from a client:
 * request routing (method + decoded path), the JSON bodies of /lb/set-fixed-node,
 * /api/force-rebalance-all and the per-monitor operations, the query parameters of
 * /api/failover-history and /api/monitors, the Authorization header, static paths and the HTML
 * escaping of the fixed-node page, and the Accept-Encoding header (api_route.c).
 *
 * Input layout: byte 0 picks the method; the rest up to the first '\n' is the path; the rest is
 * the body, also split on '&' into query parameter values.  Besides crashes and sanitizer
 * reports, the target aborts when an accepted input breaks a promise of api_route.h (a node id
 * or static path that passed validation but is not well-formed, HTML that still holds '<').
 *
 * fuzz-sources: api_route.c snapshot.c types.c clock.c hostcheck.c
 * (read by scripts/fuzz-short.sh: the server files this target links) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_route.h"
#include "hostcheck.h"

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_api_router: broken promise: %s\n", what);
        abort();
    }
}

static char *dup_n(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void fuzz_route(const char *method, const char *path)
{
    api_match m;
    api_route_match(method, path, &m);
    check(m.status == 0 || m.status == 400 || m.status == 404 || m.status == 405, "status");
    if (m.status == 0 || m.status == 405) {
        check(m.id > API_R_NONE && m.id < API_R_COUNT, "route id in range");
        check(m.allowed != 0, "a route allows some method");
    }
    if (m.status == 0 && m.node[0])
        check(hostcheck_node_id_valid(m.node), "node id from the path is valid");
    if (m.status == 0 && m.id == API_R_STATIC) {
        check(api_static_path_ok(m.static_rel), "static path valid");
        check(m.static_rel[0] != '/', "relative");
        for (const char *p = m.static_rel; *p; p++)
            check(*p != '\\' && *p != '%' && !((p == m.static_rel || p[-1] == '/') && *p == '.'),
                  "no '.', '..' or hidden segment, no backslash or escape");
    }
    char allow[32];
    api_allow_header(m.allowed, allow, sizeof allow);
    (void)api_route_name(m.id);
    (void)api_content_type_for(path);
}

static void fuzz_history(const char *q)
{
    /* up to six '&'-separated values, in the order node, kind, since, until, limit, before */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", q);
    const char *v[6] = {NULL};
    char *save = NULL;
    int i = 0;
    for (char *t = strtok_r(buf, "&", &save); t && i < 6; t = strtok_r(NULL, "&", &save))
        v[i++] = t;
    api_history_params p = {v[0], v[1], v[2], v[3], v[4], v[5]};
    events_query q2;
    char node[KG_NODE_ID_MAX + 1], err[256];
    if (api_parse_history_params(&p, &q2, node, err, sizeof err) == 0) {
        check(q2.limit >= 1 && q2.limit <= API_HISTORY_MAX_LIMIT, "limit bounded");
        check(!q2.node || hostcheck_node_id_valid(q2.node), "history node valid");
        check(q2.since_ms >= 0 && q2.until_ms >= 0 && q2.before_id >= 0, "non-negative");
        check(!(q2.since_ms && q2.until_ms) || q2.since_ms <= q2.until_ms, "range ordered");
    }
}

/* Body of POST /api/monitors/[<id>/]<op>: what is accepted keeps the promises of
 * api_route.h (ids positive, sorted, unique, bounded; a valid target node). */
static void fuzz_monitor_op(const char *body, size_t n, uint8_t sel)
{
    monitor_op_request req;
    char err[256];
    monitor_op_kind kind = (monitor_op_kind)(sel % 3);
    int64_t path_id = (sel & 4) ? 42 : 0;
    if (api_parse_monitor_op(kind, path_id, body, n, &req, err, sizeof err) != 0)
        return;
    check(req.n_ids >= 1 && req.n_ids <= MONITOR_OPS_MAX_BATCH, "monitor ids bounded");
    for (size_t i = 0; i < req.n_ids; i++)
        check(req.ids[i] >= 1 && req.ids[i] <= INT32_MAX && (i == 0 || req.ids[i] > req.ids[i - 1]),
              "monitor ids positive, sorted and unique");
    check(!path_id || (req.n_ids == 1 && req.ids[0] == path_id), "single form names its id");
    check(kind == MONITOR_OP_UNPIN || hostcheck_node_id_valid(req.node), "target node valid");
    check(kind == MONITOR_OP_MOVE || !req.revert, "revert only for move");
}

static void fuzz_monitors_params(const char *q)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", q);
    const char *v[9] = {NULL};
    char *save = NULL;
    int i = 0;
    for (char *t = strtok_r(buf, "&", &save); t && i < 9; t = strtok_r(NULL, "&", &save))
        v[i++] = t;
    api_monitors_params p = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
    api_monitors_filter f;
    char err[256];
    if (api_parse_monitors_params(&p, &f, err, sizeof err) != 0)
        return;
    check(f.limit >= 1 && f.limit <= API_MONITORS_MAX_LIMIT, "monitor page bounded");
    check(!f.node[0] || hostcheck_node_id_valid(f.node), "monitor node filter valid");
    check(!f.home[0] || hostcheck_node_id_valid(f.home), "monitor home filter valid");
    check(strlen(f.search) <= API_MONITORS_SEARCH_MAX, "search bounded");
    for (const char *c = f.search; *c; c++)
        check((unsigned char)*c >= 0x20 && *c != 0x7f, "search printable");
    check(f.override >= 0 && f.override <= 4 && f.live >= -1 && f.live <= 1 &&
              f.active >= -1 && f.active <= 1 && f.after >= 0,
          "filters in range");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", ""};
    if (size < 1)
        return 0;
    const char *method = methods[data[0] % (sizeof methods / sizeof methods[0])];
    const uint8_t *rest = data + 1;
    size_t rest_n = size - 1;
    const uint8_t *nl = memchr(rest, '\n', rest_n);
    size_t path_n = nl ? (size_t)(nl - rest) : rest_n;
    char *path = dup_n(rest, path_n);
    const uint8_t *body = nl ? nl + 1 : rest + rest_n;
    size_t body_n = nl ? rest_n - path_n - 1 : 0;

    fuzz_route(method, path);

    /* JSON bodies: exact length, no NUL terminator, as MHD hands them over */
    char node[KG_NODE_ID_MAX + 1], err[160];
    uint8_t *exact = malloc(body_n ? body_n : 1);
    if (!exact)
        abort();
    if (body_n)
        memcpy(exact, body, body_n);
    if (api_parse_fixed_node_body((const char *)exact, body_n, node, sizeof node, err,
                                  sizeof err) == 0)
        check(hostcheck_node_id_valid(node), "node from the JSON body is valid");
    if (api_parse_confirm_body((const char *)exact, body_n, "force-rebalance-all"))
        check(body_n >= strlen("{\"confirm\":\"force-rebalance-all\"}"), "confirm is explicit");
    fuzz_monitor_op((const char *)exact, body_n, data[0]);
    free(exact);

    char *b = dup_n(body, body_n);
    int64_t t;
    if (api_parse_time_ms(b, &t) == 0)
        check(t >= 0, "times are not before the epoch");
    fuzz_history(b);
    fuzz_monitors_params(b);
    if (api_accepts_gzip(b))
        check(strcasestr(b, "gzip") != NULL || strchr(b, '*') != NULL,
              "gzip only when named or wildcarded");
    int rc = api_bearer_check(b, "fuzz-token-123");
    check(rc >= 0 && rc <= 2, "bearer result");
    if (rc == 0)
        check(strstr(b, "fuzz-token-123") != NULL, "only the token matches");
    (void)api_content_type_is_json(b);
    (void)api_static_path_ok(b);

    char html[1024];
    if (api_html_escape(b, html, sizeof html) >= 0)
        check(!strpbrk(html, "<>\"'"), "escaped HTML has no markup characters");
    free(b);
    free(path);
    return 0;
}
