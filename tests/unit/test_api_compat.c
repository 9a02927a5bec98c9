/* test_api_compat.c — the keys of the Lua version (issue 14) carry the Lua version's meaning:
 * each is checked against the synthetic snapshot of api_fixture.h, document by document.
 * (tests/integration/test_api_compat.py replays the /lb/ request list against the real
 * daemon and checks every key's presence and type.) */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <string.h>

#include "api_fixture.h"
#include "api_json.h"
#include "setup_watch.h"

static kg_snapshot *s;

static void setup(void) { s = fixture_snapshot(10); }
static void teardown(void)
{
    snapshot_release(s);
}

TestSuite(compat, .init = setup, .fini = teardown);

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, key, &v), "missing %s in %s", key,
              json_object_to_json_string(o));
    return v;
}

static int64_t get_int(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    cr_assert(json_object_is_type(v, json_type_int), "%s is not an integer", key);
    return json_object_get_int64(v);
}

static const char *get_str(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    cr_assert(json_object_is_type(v, json_type_string), "%s is not a string", key);
    return json_object_get_string(v);
}

#define FIX_SECONDS (FIX_T0 / 1000)

Test(compat, lb_health_timestamp_and_last_seen)
{
    int st;
    json_object *o = api_doc_lb_health(s, &st);
    cr_expect_eq(get_int(o, "timestamp"), FIX_SECONDS, "Unix seconds, as os.time()");
    json_object *n0 = json_object_array_get_idx(get(o, "nodes"), 0);
    cr_expect_str_eq(get_str(n0, "last_seen"), "2026-11-26T13:59:59.123Z");
    cr_expect_str_eq(get_str(n0, "status"), "online");
    json_object_put(o);
}

Test(compat, capacity_limit_and_current_count)
{
    json_object *o = api_doc_capacity(s);
    cr_expect_eq(get_int(o, "limit_per_node"), 1000);
    json_object *nodes = get(o, "nodes");
    for (int i = 0; i < 10; i++) {
        json_object *n = json_object_array_get_idx(nodes, (size_t)i);
        cr_expect_eq(get_int(n, "current_count"), s->nodes[i].effective_monitors,
                     "counted by effective node, not home");
        cr_expect_eq(get_int(n, "limit_per_node"), 1000);
    }
    json_object_put(o);
}

Test(compat, health_status_counts_probes)
{
    json_object *o = api_doc_health_status(s);
    /* probes_total 100..109 = 1045, probes_failed 0..9 = 45 */
    cr_expect_eq(get_int(o, "check_count"), 1045);
    cr_expect_eq(get_int(o, "fail_count"), 45);
    cr_expect_eq(get_int(o, "success_count"), 1000);
    json_object_put(o);
}

Test(compat, system_status_timestamp_health_and_setup)
{
    json_object *o = api_doc_system_status(s, NULL);
    cr_expect_eq(get_int(o, "timestamp"), FIX_SECONDS);
    json_object *h = get(o, "health");
    cr_expect_str_eq(get_str(h, "status"), "degraded");
    cr_expect_eq(get_int(h, "check_count"), 1045);
    cr_expect_eq(get_int(h, "fail_count"), 45);
    cr_expect_str_eq(get_str(get(o, "setup"), "routing_mode"), "cluster");
    json_object_put(o);
}

Test(compat, node_status_node_name_and_status)
{
    json_object *o = api_doc_node_status(s);
    cr_expect_eq(get_int(o, "timestamp"), FIX_SECONDS);
    json_object *n8 = json_object_array_get_idx(get(o, "nodes"), 8);
    cr_expect_str_eq(get_str(n8, "node_name"), "Kuma node 9");
    cr_expect_str_eq(get_str(n8, "status"), "offline");
    cr_expect_str_eq(get_str(n8, "status"), get_str(n8, "state"));
    json_object_put(o);
}

Test(compat, load_balancer_status)
{
    json_object *o = api_doc_load_balancer_status(s);
    cr_expect_eq(get_int(o, "timestamp"), FIX_SECONDS);
    cr_expect_str_eq(get_str(o, "load_balancer"), "nginx");
    cr_expect_str_eq(get_str(o, "algorithm"), "consistent-hash-remote-addr");
    cr_expect_eq(get_int(get(o, "capacity"), "limit_per_node"), 1000);
    json_object *cl = get(o, "cluster");
    cr_expect_eq(get_int(cl, "nodes_total"), 10);
    cr_expect_str_eq(get_str(cl, "routing_mode"), "cluster");
    json_object_put(o);
}

Test(compat, rebalancing_status_and_message)
{
    json_object *o = api_doc_rebalancing_status(s, NULL);
    cr_expect_str_eq(get_str(o, "status"), "running");
    cr_expect(strstr(get_str(o, "message"), "30 of 120") != NULL, "%s", get_str(o, "message"));
    json_object_put(o);
    s->rebalance.running = false;
    snprintf(s->rebalance.phase, sizeof s->rebalance.phase, "cancelled");
    o = api_doc_rebalancing_status(s, NULL);
    cr_expect_str_eq(get_str(o, "status"), "idle", "whatever the last phase: a waiting "
                                                   "script ends");
    cr_expect(strstr(get_str(o, "message"), "cancelled") != NULL);
    json_object_put(o);
}

Test(compat, fixed_node_status_embeds_the_cluster_status)
{
    json_object *o = api_doc_fixed_node_status(s, "node02");
    json_object *cs = get(o, "cluster_status");
    cr_expect_eq(get_int(cs, "timestamp"), FIX_SECONDS);
    cr_expect_eq(json_object_array_length(get(cs, "nodes")), 10);
    json_object_put(o);
}

Test(compat, ping_says_healthy)
{
    json_object *o = api_doc_ping(FIX_T0);
    cr_expect_str_eq(get_str(o, "status"), "healthy");
    cr_expect_str_eq(get_str(o, "service"), "kumaguard");
    cr_expect_eq(get_int(o, "timestamp"), FIX_SECONDS);
    json_object_put(o);
}

Test(compat, setup_status_while_pending_and_after)
{
    setup_watch_fill(s); /* no watcher (not MariaDB): not gated; node01 has is_primary */
    json_object *o = api_doc_setup_status(s);
    cr_expect(json_object_get_boolean(get(o, "setup_complete")), "sqlite: never gated");
    cr_expect_str_eq(get_str(o, "routing_mode"), "cluster");
    cr_expect_str_eq(get_str(o, "primary_node"), "node01");
    json_object_put(o);
    s->setup_gated = true;
    s->setup_complete = false;
    s->setup_checked_ms = FIX_T0;
    snprintf(s->setup_primary, sizeof s->setup_primary, "node01");
    o = api_doc_setup_status(s);
    cr_expect(!json_object_get_boolean(get(o, "setup_complete")));
    cr_expect_str_eq(get_str(o, "routing_mode"), "primary_only");
    cr_expect(strstr(get_str(o, "message"), "node01") != NULL);
    cr_expect_str_eq(get_str(o, "setup_url"), "http://uptime-kuma-node1:3001/");
    cr_expect(!json_object_get_boolean(get(o, "reconcile_allowed")));
    json_object_put(o);
}
