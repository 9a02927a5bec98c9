/* test_monitor_ops.c — the per-monitor operations without a server: planning (monitor_ops.c,
 * pure), the request bodies and the listing's query parameters (api_route.c), and the first-run
 * setup gate's pure parts (setup_watch.c). */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <string.h>

#include "api_route.h"
#include "monitor_ops.h"
#include "setup_watch.h"
#include "snapshot.h"

/* ---- fixture ------------------------------------------------------------------------------ */

static kg_node_view nodes[4];

static void set_node(int i, const char *id, node_state st, bool host_valid)
{
    memset(&nodes[i], 0, sizeof nodes[i]);
    snprintf(nodes[i].id, sizeof nodes[i].id, "%s", id);
    nodes[i].state = st;
    nodes[i].host_valid = host_valid;
}

static void setup(void)
{
    set_node(0, "n1", NODE_ONLINE, true);
    set_node(1, "n2", NODE_ONLINE, true);
    set_node(2, "n3", NODE_OFFLINE, true);
    set_node(3, "n4", NODE_ONLINE, false);
}

static store_monitor_row row(int64_t id, bool active, const char *home, const char *over,
                             bool ours)
{
    store_monitor_row r;
    memset(&r, 0, sizeof r);
    r.id = id;
    r.active = active;
    r.has_home = home != NULL;
    r.has_over = over != NULL;
    snprintf(r.home, sizeof r.home, "%s", home ? home : "");
    snprintf(r.over, sizeof r.over, "%s", over ? over : "");
    r.ours = ours;
    return r;
}

/* 1 plain on n1, 2 our failover n2->n1, 3 pinned to n2, 4 paused, 5 homeless */
static store_monitor_row rows[5];

static void setup_rows(void)
{
    setup();
    rows[0] = row(1, true, "n1", NULL, false);
    rows[1] = row(2, true, "n2", "n1", true);
    rows[2] = row(3, true, "n1", "n2", false);
    rows[3] = row(4, false, "n1", NULL, false);
    rows[4] = row(5, true, NULL, NULL, false);
}

static monitor_op_request req(monitor_op_kind k, const char *node, bool revert, int n, ...)
{
    monitor_op_request r;
    memset(&r, 0, sizeof r);
    r.kind = k;
    r.revert = revert;
    snprintf(r.node, sizeof r.node, "%s", node ? node : "");
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        r.ids[i] = va_arg(ap, int64_t);
    va_end(ap);
    r.n_ids = (size_t)n;
    return r;
}

static long plan(const monitor_op_request *r, store_monitor_change *ch, monitor_ops_verdict *v)
{
    return monitor_ops_plan(r, nodes, 4, rows, 5, ch, v);
}

static const char *s_or_null(const char *s) { return s ? s : "(null)"; }

TestSuite(plan, .init = setup_rows);

/* ---- planning ----------------------------------------------------------------------------- */

Test(plan, kept_move_changes_the_home_and_drops_our_override)
{
    store_monitor_change ch[2];
    monitor_ops_verdict v;
    monitor_op_request r = req(MONITOR_OP_MOVE, "n2", false, 2, (int64_t)1, (int64_t)2);
    cr_assert_eq(plan(&r, ch, &v), 2, "%s", v.detail);
    cr_expect_eq(v.status, 200);
    cr_expect_str_eq(ch[0].new_home, "n2");
    cr_expect_null(ch[0].new_over);
    cr_expect_str_eq(ch[0].expect_home, "n1");
    cr_expect_null(ch[0].expect_over, "the guard is the row as read");
    cr_expect_str_eq(ch[1].new_home, "n2", "2 becomes homed where it was failed over from");
    cr_expect_null(ch[1].new_over, "and kumaguard's override goes");
    cr_expect_eq(ch[1].record, STORE_RECORD_DELETE);
    cr_expect_str_eq(ch[1].expect_over, "n1");
}

Test(plan, reverting_move_is_kumaguards_override_and_home_clears_it)
{
    store_monitor_change ch[2];
    monitor_ops_verdict v;
    monitor_op_request r = req(MONITOR_OP_MOVE, "n2", true, 1, (int64_t)1);
    cr_assert_eq(plan(&r, ch, &v), 1, "%s", v.detail);
    cr_expect_str_eq(ch[0].new_home, "n1", "the home stays: the monitor goes back there");
    cr_expect_str_eq(ch[0].new_over, "n2");
    cr_expect_eq(ch[0].record, STORE_RECORD_SET);
    /* moving 2 (home n2, ours n1) to its home: just the override goes */
    r = req(MONITOR_OP_MOVE, "n2", true, 1, (int64_t)2);
    cr_assert_eq(plan(&r, ch, &v), 1, "%s", v.detail);
    cr_expect_str_eq(ch[0].new_home, "n2");
    cr_expect_null(ch[0].new_over);
    cr_expect_eq(ch[0].record, STORE_RECORD_DELETE);
    /* already there as our override: nothing to write */
    r = req(MONITOR_OP_MOVE, "n1", true, 1, (int64_t)2);
    cr_expect_eq(plan(&r, ch, &v), 0);
    cr_expect_eq(v.status, 200);
}

Test(plan, pin_and_unpin)
{
    store_monitor_change ch[3];
    monitor_ops_verdict v;
    monitor_op_request r = req(MONITOR_OP_PIN, "n2", false, 3, (int64_t)1, (int64_t)2,
                               (int64_t)3);
    /* 3 is already pinned to n2: two changes */
    cr_assert_eq(plan(&r, ch, &v), 2, "%s", v.detail);
    for (int i = 0; i < 2; i++) {
        cr_expect_str_eq(ch[i].new_over, "n2");
        cr_expect_eq(ch[i].record, STORE_RECORD_DELETE, "a pin is never kumaguard's");
    }
    r = req(MONITOR_OP_PIN, "n1", false, 1, (int64_t)2);
    cr_expect_eq(plan(&r, ch, &v), 1, "our override already on n1 becomes a pin there");
    r = req(MONITOR_OP_UNPIN, NULL, false, 1, (int64_t)3);
    cr_assert_eq(plan(&r, ch, &v), 1, "%s", v.detail);
    cr_expect_null(ch[0].new_over);
    cr_expect_str_eq(ch[0].new_home, "n1");
}

Test(plan, refusals_name_the_problem_and_plan_nothing)
{
    const struct {
        monitor_op_request r;
        int status;
        const char *error, *mentions;
    } cases[] = {
        {req(MONITOR_OP_MOVE, "n9", false, 1, (int64_t)1), 404, "unknown_node", "n9"},
        {req(MONITOR_OP_MOVE, "n3", false, 1, (int64_t)1), 409, "node_not_online", "offline"},
        {req(MONITOR_OP_PIN, "n4", false, 1, (int64_t)1), 409, "node_not_online", "invalid host"},
        {req(MONITOR_OP_MOVE, "n2", false, 2, (int64_t)1, (int64_t)99), 404, "unknown_monitor",
         "99"},
        {req(MONITOR_OP_PIN, "n2", false, 1, (int64_t)4), 409, "monitor_inactive", "4"},
        {req(MONITOR_OP_MOVE, "n1", false, 2, (int64_t)1, (int64_t)3), 409, "monitor_pinned",
         "unpin"},
        {req(MONITOR_OP_UNPIN, NULL, false, 1, (int64_t)2), 409, "not_pinned", "kumaguard"},
        {req(MONITOR_OP_UNPIN, NULL, false, 1, (int64_t)1), 409, "not_pinned", "1"},
        {req(MONITOR_OP_UNPIN, NULL, false, 0), 400, "bad_request", "1 and"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        store_monitor_change ch[4];
        monitor_ops_verdict v;
        cr_expect_eq(plan(&cases[i].r, ch, &v), -1, "case %zu", i);
        cr_expect_eq(v.status, cases[i].status, "case %zu: %d %s", i, v.status, v.detail);
        cr_expect_str_eq(v.error, cases[i].error, "case %zu", i);
        cr_expect(strstr(v.detail, cases[i].mentions) != NULL, "case %zu: %s", i, v.detail);
    }
}

Test(plan, unpin_of_a_paused_monitor_is_allowed)
{
    rows[3] = row(4, false, "n1", "n2", false);
    store_monitor_change ch[1];
    monitor_ops_verdict v;
    monitor_op_request r = req(MONITOR_OP_UNPIN, NULL, false, 1, (int64_t)4);
    cr_expect_eq(plan(&r, ch, &v), 1, "%s", v.detail);
}

Test(plan, homeless_monitor_can_be_moved_and_pinned)
{
    store_monitor_change ch[1];
    monitor_ops_verdict v;
    monitor_op_request r = req(MONITOR_OP_MOVE, "n1", false, 1, (int64_t)5);
    cr_assert_eq(plan(&r, ch, &v), 1, "%s", v.detail);
    cr_expect_null(ch[0].expect_home);
    cr_expect_str_eq(ch[0].new_home, "n1");
    r = req(MONITOR_OP_MOVE, "n1", true, 1, (int64_t)5);
    cr_assert_eq(plan(&r, ch, &v), 1);
    cr_expect_str_eq(s_or_null(ch[0].new_over), "n1");
    cr_expect_eq(ch[0].record, STORE_RECORD_SET);
}

/* ---- request bodies and query parameters -------------------------------------------------- */

static int parse(monitor_op_kind k, int64_t path_id, const char *body, monitor_op_request *r,
                 char *err)
{
    return api_parse_monitor_op(k, path_id, body, body ? strlen(body) : 0, r, err, 256);
}

Test(parse, single_and_batch_bodies)
{
    monitor_op_request r;
    char err[256];
    cr_assert_eq(parse(MONITOR_OP_MOVE, 7, "{\"node\":\"node2\",\"revert\":true}", &r, err), 0,
                 "%s", err);
    cr_expect_eq(r.n_ids, 1);
    cr_expect_eq(r.ids[0], 7);
    cr_expect_str_eq(r.node, "node2");
    cr_expect(r.revert);
    cr_assert_eq(parse(MONITOR_OP_MOVE, 7, "{\"node\":\"node2\"}", &r, err), 0);
    cr_expect(!r.revert, "revert defaults to false: a kept move");
    cr_assert_eq(parse(MONITOR_OP_UNPIN, 9, "", &r, err), 0, "unpin needs no body");
    cr_expect_eq(r.ids[0], 9);
    cr_assert_eq(parse(MONITOR_OP_PIN, 0, "{\"ids\":[5,3,5,1],\"node\":\"n1\",\"x\":1}", &r, err),
                 0, "%s", err);
    cr_expect_eq(r.n_ids, 3, "duplicates merged");
    cr_expect(r.ids[0] == 1 && r.ids[1] == 3 && r.ids[2] == 5, "sorted");
}

Test(parse, malformed_bodies_are_refused_with_a_reason)
{
    static const struct {
        monitor_op_kind k;
        int64_t path_id;
        const char *body, *mentions;
    } bad[] = {
        {MONITOR_OP_MOVE, 7, "", "JSON object"},
        {MONITOR_OP_MOVE, 7, "[1]", "JSON object"},
        {MONITOR_OP_MOVE, 7, "{\"node\":\"node 2\"}", "node"},
        {MONITOR_OP_MOVE, 7, "{\"node\":7}", "node"},
        {MONITOR_OP_MOVE, 7, "{\"node\":\"n1\",\"revert\":\"yes\"}", "revert"},
        {MONITOR_OP_PIN, 7, "{}", "node"},
        {MONITOR_OP_PIN, 7, "{\"ids\":[1],\"node\":\"n1\"}", "batch"},
        {MONITOR_OP_PIN, 0, "{\"node\":\"n1\"}", "ids"},
        {MONITOR_OP_PIN, 0, "{\"ids\":[],\"node\":\"n1\"}", "1 to 500"},
        {MONITOR_OP_PIN, 0, "{\"ids\":[1,\"2\"],\"node\":\"n1\"}", "ids\"[1]"},
        {MONITOR_OP_PIN, 0, "{\"ids\":[1.5],\"node\":\"n1\"}", "ids\"[0]"},
        {MONITOR_OP_PIN, 0, "{\"ids\":[0],\"node\":\"n1\"}", "ids\"[0]"},
        {MONITOR_OP_PIN, 0, "{\"ids\":[3000000000],\"node\":\"n1\"}", "ids\"[0]"},
        {MONITOR_OP_UNPIN, 0, "{\"ids\":{}}", "array"},
        {MONITOR_OP_UNPIN, 0, "{\"ids\":[1]} trailing", "JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        monitor_op_request r;
        char err[256] = "";
        cr_expect_eq(parse(bad[i].k, bad[i].path_id, bad[i].body, &r, err), -1, "case %zu", i);
        cr_expect(strstr(err, bad[i].mentions) != NULL, "case %zu: %s", i, err);
    }
    char big[8192] = "{\"node\":\"n1\",\"ids\":[";
    for (int i = 1; i <= 501; i++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "%s%d", i > 1 ? "," : "", i);
    strcat(big, "]}");
    monitor_op_request r;
    char err[256];
    cr_expect_eq(parse(MONITOR_OP_PIN, 0, big, &r, err), -1, "more than 500 ids");
}

Test(parse, listing_parameters)
{
    api_monitors_filter f;
    char err[256];
    api_monitors_params p = {0};
    cr_assert_eq(api_parse_monitors_params(&p, &f, err, sizeof err), 0);
    cr_expect(f.limit == 50 && f.total && f.active == -1 && f.live == -1 && !f.override);
    p = (api_monitors_params){.node = "node2", .state = "stranded", .pinned = "false",
                              .q = "web 1", .limit = "500", .after = "42", .total = "false"};
    cr_assert_eq(api_parse_monitors_params(&p, &f, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(f.node, "node2");
    cr_expect(f.active == 1 && f.live == 0, "stranded: active, effective node not live");
    cr_expect_eq(f.override, 4, "pinned=false: not pinned");
    cr_expect(f.limit == 500 && f.after == 42 && !f.total);
    cr_expect_str_eq(f.search, "web 1");
    p = (api_monitors_params){.state = "unassigned", .override = "ours"};
    cr_assert_eq(api_parse_monitors_params(&p, &f, err, sizeof err), 0);
    cr_expect(f.unassigned && f.override == 2);
    static const api_monitors_params bad[] = {
        {.node = "a b"}, {.home = ""}, {.state = "dead"}, {.pinned = "maybe"},
        {.override = "theirs"}, {.pinned = "true", .override = "ours"}, {.limit = "0"},
        {.limit = "501"}, {.after = "-1"}, {.total = "yes"},
        {.q = "tab\there"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = api_parse_monitors_params(&bad[i], &f, err, sizeof err);
        if (i == 1)
            cr_expect_eq(rc, 0, "an empty parameter is no filter");
        else
            cr_expect_eq(rc, -1, "case %zu", i);
    }
}

Test(parse, monitor_routes)
{
    api_match m;
    api_route_match("POST", "/api/monitors/17/move", &m);
    cr_expect(m.status == 0 && m.id == API_R_MONITOR_MOVE && m.monitor_id == 17 && m.needs_auth);
    api_route_match("POST", "/lb/monitors/17/unpin", &m);
    cr_expect(m.status == 0 && m.id == API_R_MONITOR_UNPIN && m.monitor_id == 17);
    api_route_match("POST", "/api/monitors/pin", &m);
    cr_expect(m.status == 0 && m.id == API_R_MONITOR_PIN && m.monitor_id == 0 && m.needs_auth);
    api_route_match("GET", "/api/monitors/17/move", &m);
    cr_expect_eq(m.status, 405, "a GET on an operation");
    api_route_match("GET", "/api/monitors", &m);
    cr_expect(m.status == 0 && m.id == API_R_MONITORS && !m.needs_auth);
    api_route_match("GET", "/lb/setup-status", &m);
    cr_expect(m.status == 0 && m.id == API_R_SETUP_STATUS);
    static const char *const not_routes[] = {"/api/monitors/0/move", "/api/monitors/01/move",
                                             "/api/monitors/x/move", "/api/monitors/1/stop",
                                             "/api/monitors/99999999999/pin"};
    for (size_t i = 0; i < sizeof not_routes / sizeof not_routes[0]; i++) {
        api_route_match("POST", not_routes[i], &m);
        cr_expect_eq(m.status, 404, "%s", not_routes[i]);
    }
}

/* ---- first-run setup gate (pure parts) ------------------------------------------------------ */

Test(setup_gate, primary_is_is_primary_then_node1_then_none)
{
    setup();
    cr_expect_null(setup_primary(nodes, 4), "no is_primary and no node1: none, no guessing");
    set_node(0, "node1", NODE_ONLINE, true);
    nodes[2].is_primary = true;
    cr_expect_str_eq(setup_primary(nodes, 4)->id, "n3", "is_primary wins over node1");
    nodes[2].is_primary = false;
    cr_expect_str_eq(setup_primary(nodes, 4)->id, "node1");
    nodes[3].is_primary = true;
    cr_expect_str_eq(setup_primary(nodes, 4)->id, "n4", "is_primary, even unroutable");
}

Test(setup_gate, pending_setup_leaves_only_the_primary_routable)
{
    setup();
    cr_expect_eq(setup_gate_nodes(nodes, 4, "n2"), 3);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(node_state_routable(nodes[i].state), i == 1, "%s", nodes[i].id);
    kg_snapshot s = {.setup_gated = true, .setup_complete = false};
    snprintf(s.setup_primary, sizeof s.setup_primary, "n2");
    cr_expect_str_eq(setup_routing_mode(&s), "primary_only");
    s.setup_complete = true;
    cr_expect_str_eq(setup_routing_mode(&s), "cluster");
    s.setup_complete = false;
    s.setup_primary[0] = '\0';
    cr_expect_str_eq(setup_routing_mode(&s), "cluster", "no primary known: nothing to pin to");
    s.setup_gated = false;
    snprintf(s.setup_primary, sizeof s.setup_primary, "n2");
    cr_expect_str_eq(setup_routing_mode(&s), "cluster");
}
