/* test_api_route.c — routing and input parsing of the HTTP API (api_route.c), without sockets:
 * which handler a request reaches, which methods answer 405, and how bodies, query parameters,
 * tokens and static paths from clients are validated. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "api_route.h"

static api_match route(const char *method, const char *path)
{
    api_match m;
    api_route_match(method, path, &m);
    return m;
}

Test(api_route, reads_answer_under_api_and_lb_prefixes)
{
    const char *names[] = {"system-status", "node-status", "load-balancer-status",
                           "health-check-status", "fault-detection-status",
                           "rebalancing-status", "health-status", "failover-history",
                           "events", "debug-config", "debug-logs"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "/api/%s", names[i]);
        snprintf(b, sizeof b, "/lb/%s", names[i]);
        api_match ma = route("GET", a), mb = route("GET", b);
        cr_assert_eq(ma.status, 0, "%s", a);
        cr_assert_eq(mb.status, 0, "%s", b);
        cr_assert_eq(ma.id, mb.id, "%s and %s differ", a, b);
        cr_assert_str_eq(api_route_name(ma.id), names[i]);
    }
    cr_assert_eq(route("GET", "/lb/capacity").id, API_R_CAPACITY);
    cr_assert_eq(route("HEAD", "/metrics").status, 0);
    cr_assert_eq(route("GET", "/health").id, API_R_HEALTH);
    cr_assert_eq(route("GET", "/lb/health").id, API_R_LB_HEALTH);
}

Test(api_route, actions_are_post_only_and_authenticated)
{
    api_match m = route("GET", "/api/trigger-rebalancing");
    cr_assert_eq(m.status, 405);
    char allow[32];
    cr_assert_str_eq(api_allow_header(m.allowed, allow, sizeof allow), "POST");
    m = route("POST", "/lb/trigger-rebalancing");
    cr_assert_eq(m.status, 0);
    cr_assert(m.needs_auth);
    cr_assert(api_route_is_action(m.id));
    cr_assert(route("GET", "/api/debug-logs").needs_auth);
    cr_assert(route("GET", "/api/debug-config").needs_auth);
    cr_assert_not(route("POST", "/lb/set-fixed-node").needs_auth);
    m = route("PUT", "/api/system-status");
    cr_assert_eq(m.status, 405);
    cr_assert_str_eq(api_allow_header(m.allowed, allow, sizeof allow), "GET, HEAD");
}

Test(api_route, node_actions_carry_the_node_id)
{
    api_match m = route("POST", "/api/nodes/node-2.a_b/drain");
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.id, API_R_NODE_DRAIN);
    cr_assert_str_eq(m.node, "node-2.a_b");
    cr_assert_eq(route("POST", "/lb/nodes/n1/maintenance").id, API_R_NODE_MAINTENANCE);
    cr_assert_eq(route("POST", "/api/nodes/n1/enable").id, API_R_NODE_ENABLE);
    cr_assert_eq(route("GET", "/api/nodes/n1/enable").status, 405);
    cr_assert_eq(route("POST", "/api/nodes/n%201/drain").status, 400);
    cr_assert_eq(route("POST", "/api/nodes//drain").status, 400);
    cr_assert_eq(route("POST", "/api/nodes/n1/reboot").status, 404);
    cr_assert_eq(route("POST", "/api/nodes/n1/drain/x").status, 404);
    char longid[80];
    memset(longid, 'a', 51);
    snprintf(longid + 51, sizeof longid - 51, "/drain");
    char path[120];
    snprintf(path, sizeof path, "/api/nodes/%s", longid);
    cr_assert_eq(route("POST", path).status, 400, "ids are at most 50 characters");
}

Test(api_route, fixed_node_routes)
{
    cr_assert_eq(route("OPTIONS", "/lb/set-fixed-node").status, 405,
                 "CORS preflights are refused");
    cr_assert_eq(route("GET", "/lb/set-fixed-node").status, 405);
    cr_assert_eq(route("GET", "/lb/clear-fixed-node").status, 0);
    cr_assert_eq(route("POST", "/lb/clear-fixed-node").status, 0);
    api_match m = route("GET", "/lb/fixed-node/node3");
    cr_assert_eq(m.id, API_R_FIXED_NODE_PAGE);
    cr_assert_str_eq(m.node, "node3");
    cr_assert_eq(route("POST", "/lb/fixed-node/node3").status, 405,
                 "the page changes nothing; it is GET only");
    cr_assert_eq(route("GET", "/lb/fixed-node/<b>").status, 400);
}

Test(api_route, unknown_paths_are_404)
{
    cr_assert_eq(route("GET", "/api/v1/health").status, 404);
    cr_assert_eq(route("GET", "/api/system-status/").status, 404);
    cr_assert_eq(route("GET", "").status, 404);
    cr_assert_eq(route("GET", NULL).status, 404);
    cr_assert_eq(route("GET", "relative").status, 404);
    cr_assert_eq(route("GET", "/lb/").status, 404);
}

Test(api_route, static_paths_cannot_escape)
{
    cr_assert_eq(route("GET", "/static/app.js").id, API_R_STATIC);
    cr_assert_str_eq(route("GET", "/static/css/site.min.css").static_rel, "css/site.min.css");
    const char *bad[] = {"/static/../etc/passwd", "/static/a/../../x", "/static/.env",
                         "/static/a//b",          "/static/",          "/static/a/",
                         "/static/a\\b",          "/static/%2e%2e/x",  "/static/a\nb",
                         "/static/./a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(route("GET", bad[i]).status, 404, "%s", bad[i]);
    cr_assert_str_eq(api_content_type_for("a/b.JS"), "text/javascript; charset=utf-8");
    cr_assert_str_eq(api_content_type_for("x.svg"), "image/svg+xml");
    cr_assert_str_eq(api_content_type_for("noext"), "application/octet-stream");
    cr_assert_str_eq(api_content_type_for("dir.d/noext"), "application/octet-stream");
}

Test(api_route, fixed_node_body)
{
    char node[KG_NODE_ID_MAX + 1], err[128];
    const char ok[] = "{\"node\": \"node2\", \"extra\": 1}";
    cr_assert_eq(api_parse_fixed_node_body(ok, sizeof ok - 1, node, sizeof node, err,
                                           sizeof err), 0);
    cr_assert_str_eq(node, "node2");
    const char *bad[] = {"", "{}", "[\"node2\"]", "{\"node\": 2}", "{\"node\": \"\"}",
                         "{\"node\": \"a b\"}", "{\"node\": \"x\"} trailing",
                         "{\"node\": \"a\\u0000b\"}", "{\"node\": \"node2\"", "null",
                         "{\"node\": \"../etc\"}x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(api_parse_fixed_node_body(bad[i], strlen(bad[i]), node, sizeof node, err,
                                               sizeof err), -1, "accepted %s", bad[i]);
    /* the length is honoured: bytes after len are not read */
    const char cut[] = "{\"node\":\"n1\"}GARBAGE";
    cr_assert_eq(api_parse_fixed_node_body(cut, 13, node, sizeof node, err, sizeof err), 0);
    cr_assert_str_eq(node, "n1");
}

Test(api_route, confirm_body)
{
    const char *want = "force-rebalance-all";
    const char ok[] = "{\"confirm\":\"force-rebalance-all\"}";
    cr_assert(api_parse_confirm_body(ok, sizeof ok - 1, want));
    const char *bad[] = {"", "{}", "{\"confirm\":true}", "{\"confirm\":\"yes\"}",
                         "{\"confirm\":\"force-rebalance-all \"}", "confirm"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(api_parse_confirm_body(bad[i], strlen(bad[i]), want), "%s", bad[i]);
    cr_assert_not(api_parse_confirm_body(NULL, 0, want));
}

Test(api_route, content_type_json)
{
    cr_assert(api_content_type_is_json("application/json"));
    cr_assert(api_content_type_is_json("Application/JSON; charset=utf-8"));
    cr_assert_not(api_content_type_is_json("application/x-www-form-urlencoded"));
    cr_assert_not(api_content_type_is_json("text/plain"));
    cr_assert_not(api_content_type_is_json("application/jsonp"));
    cr_assert_not(api_content_type_is_json(NULL));
}

Test(api_route, times_iso_and_epoch_ms)
{
    int64_t v = 0;
    cr_assert_eq(api_parse_time_ms("2026-11-26T14:00:00.123Z", &v), 0);
    cr_assert_eq(v, 1795701600123LL);
    cr_assert_eq(api_parse_time_ms("2026-11-26T15:00:00+01:00", &v), 0);
    cr_assert_eq(v, 1795701600000LL);
    cr_assert_eq(api_parse_time_ms("2026-11-26T14:00:00.5Z", &v), 0);
    cr_assert_eq(v, 1795701600500LL);
    cr_assert_eq(api_parse_time_ms("1795701600123", &v), 0);
    cr_assert_eq(v, 1795701600123LL);
    const char *bad[] = {"", "2026-11-26", "2026-11-26T14:00:00", "2026-02-30T00:00:00Z",
                         "2026-13-01T00:00:00Z", "2026-11-26T24:00:00Z", "yesterday",
                         "-5", "2026-11-26T14:00:00.Z", "2026-11-26T14:00:00Zjunk"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(api_parse_time_ms(bad[i], &v), -1, "accepted %s", bad[i]);
}

Test(api_route, history_params)
{
    events_query q;
    char node[KG_NODE_ID_MAX + 1], err[200];
    api_history_params p = {0};
    cr_assert_eq(api_parse_history_params(&p, &q, node, err, sizeof err), 0);
    cr_assert_eq(q.limit, API_HISTORY_DEFAULT_LIMIT);
    cr_assert_eq(q.kind, -1);
    cr_assert_null(q.node);

    p = (api_history_params){.node = "node2", .kind = "failover", .since = "1000",
                             .until = "2026-11-26T14:00:00Z", .limit = "5", .before = "77"};
    cr_assert_eq(api_parse_history_params(&p, &q, node, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(q.node, "node2");
    cr_assert_eq(q.kind, EV_FAILOVER);
    cr_assert_eq(q.since_ms, 1000);
    cr_assert_eq(q.until_ms, 1795701600000LL);
    cr_assert_eq(q.limit, 5);
    cr_assert_eq(q.before_id, 77);

    api_history_params bad[] = {
        {.node = "a'b"},  {.kind = "explosion"}, {.limit = "0"},     {.limit = "1001"},
        {.limit = "ten"}, {.before = "-1"},      {.since = "soon"},
        {.since = "2000", .until = "1000"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(api_parse_history_params(&bad[i], &q, node, err, sizeof err), -1,
                     "case %zu accepted", i);
}

Test(api_route, bearer_token_check)
{
    const char *tok = "s3cret-token";
    cr_assert_eq(api_bearer_check("Bearer s3cret-token", tok), 0);
    cr_assert_eq(api_bearer_check("bearer  s3cret-token ", tok), 0);
    cr_assert_eq(api_bearer_check(NULL, tok), 1);
    cr_assert_eq(api_bearer_check("", tok), 1);
    cr_assert_eq(api_bearer_check("Basic czNjcmV0", tok), 1);
    cr_assert_eq(api_bearer_check("Bearer ", tok), 1);
    cr_assert_eq(api_bearer_check("Bearer s3cret-tokeN", tok), 2);
    cr_assert_eq(api_bearer_check("Bearer s3cret", tok), 2, "a prefix is not the token");
    cr_assert_eq(api_bearer_check("Bearer s3cret-token-and-more", tok), 2);
}

Test(api_route, html_escape)
{
    char out[64];
    cr_assert_eq(api_html_escape("<a href=\"x\">&'", out, sizeof out), 38);
    cr_assert_str_eq(out, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    cr_assert_eq(api_html_escape("abcdef", out, 4), -1);
}

Test(api_route, int_parsing)
{
    int64_t v;
    cr_assert_eq(api_parse_int64("42", 0, 100, &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(api_parse_int64("101", 0, 100, &v), -1);
    cr_assert_eq(api_parse_int64("4 2", 0, 100, &v), -1);
    cr_assert_eq(api_parse_int64("99999999999999999999", 0, INT64_MAX, &v), -1);
    cr_assert_eq(api_parse_int64("+1", 0, 100, &v), -1);
    cr_assert_eq(api_parse_int64("-", -5, 100, &v), -1);
}
