/* test_api_json.c — the JSON documents and the Prometheus text of the HTTP API, built from a
 * synthetic snapshot without any server (api_json.c, api_metrics.c, api_sse.c's framing). */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "api_fixture.h"
#include "api_json.h"
#include "api_metrics.h"
#include "api_sse.h"

/* Serialises and re-parses, so the test sees what a client sees. */
static json_object *roundtrip(json_object *o)
{
    size_t len = 0;
    char *txt = api_json_dump(o, &len);
    cr_assert_not_null(txt);
    cr_assert_eq(strlen(txt), len);
    json_object *back = json_tokener_parse(txt);
    cr_assert_not_null(back, "not valid JSON: %s", txt);
    free(txt);
    json_object_put(o);
    return back;
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, key, &v), "missing key %s", key);
    return v;
}

static void assert_type(json_object *o, const char *key, json_type t)
{
    json_object *v = get(o, key);
    cr_assert(json_object_is_type(v, t), "%s: type %s, expected %s", key,
              json_type_to_name(json_object_get_type(v)), json_type_to_name(t));
}

static void assert_number(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    cr_assert(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double),
              "%s is not a number", key);
}

/* "YYYY-MM-DDThh:mm:ss.mmmZ" */
static void assert_iso_time(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    cr_assert(json_object_is_type(v, json_type_string), "%s is not a string", key);
    const char *s = json_object_get_string(v);
    cr_assert_eq(strlen(s), 24, "%s = %s", key, s);
    cr_assert(s[4] == '-' && s[7] == '-' && s[10] == 'T' && s[13] == ':' && s[16] == ':' &&
                  s[19] == '.' && s[23] == 'Z',
              "%s = %s is not ISO-8601 UTC", key, s);
}

static kg_snapshot *snap;

static void setup(void)
{
    snap = fixture_snapshot(10);
    cr_assert_not_null(snap);
}

static void teardown(void)
{
    snapshot_release(snap);
}

TestSuite(api_json, .init = setup, .fini = teardown);

Test(api_json, time_format_is_iso8601_utc_with_millis)
{
    char buf[40];
    cr_assert_str_eq(api_format_time(FIX_T0, buf, sizeof buf), "2026-11-26T14:00:00.123Z");
    cr_assert_str_eq(api_format_time(0, buf, sizeof buf), "");
}

Test(api_json, system_status_has_every_section_with_typed_values)
{
    json_object *o = roundtrip(api_doc_system_status(snap, NULL));
    assert_iso_time(o, "generated_at");
    cr_assert_str_eq(json_object_get_string(get(o, "generated_at")), "2026-11-26T14:00:00.123Z");
    const char *sections[] = {"controller", "database", "cluster", "load_balancer",
                              "health_check", "fault_detection", "rebalancing", "capacity"};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        assert_type(o, sections[i], json_type_object);
    json_object *nodes = get(o, "nodes");
    cr_assert_eq(json_object_array_length(nodes), 10);
    json_object *cl = get(o, "cluster");
    cr_assert_str_eq(json_object_get_string(get(cl, "status")), "degraded");
    cr_assert_eq(json_object_get_int(get(cl, "monitors_stranded")), 40);
    cr_assert_eq(json_object_get_int(get(get(cl, "nodes_by_state"), "offline")), 1);
    cr_assert_eq(json_object_get_int(get(get(o, "controller"), "uptime_seconds")), 3600);
    /* newest event first */
    json_object *ev = get(o, "recent_events");
    cr_assert_eq(json_object_array_length(ev), 5);
    cr_assert_eq(json_object_get_int(get(json_object_array_get_idx(ev, 0), "id")), 5);
    cr_assert_eq(json_object_get_int(get(json_object_array_get_idx(ev, 4), "id")), 1);
    json_object_put(o);
}

Test(api_json, node_object_fields_and_types)
{
    json_object *o = roundtrip(api_doc_node_status(snap));
    json_object *nodes = get(o, "nodes");
    json_object *n9 = json_object_array_get_idx(nodes, 8);
    cr_assert_str_eq(json_object_get_string(get(n9, "node_id")), "node09");
    cr_assert_str_eq(json_object_get_string(get(n9, "state")), "offline");
    cr_assert_eq(json_object_get_boolean(get(n9, "routable")), 0);
    cr_assert(json_object_is_type(get(n9, "last_latency_ms"), json_type_null),
              "a node that failed its last probe has no latency");
    cr_assert_str_eq(json_object_get_string(get(n9, "last_failure_reason")),
                     "connection refused");
    json_object *hist = get(n9, "latency_history");
    cr_assert_eq(json_object_array_length(hist), 8);
    cr_assert(json_object_is_type(json_object_array_get_idx(hist, 7), json_type_null));
    assert_number(json_object_array_get_idx(nodes, 0), "last_latency_ms");

    json_object *n1 = json_object_array_get_idx(nodes, 0);
    assert_iso_time(n1, "state_since");
    assert_iso_time(n1, "last_seen");
    cr_assert(json_object_is_type(get(n1, "last_failure"), json_type_null));
    cr_assert_eq(json_object_get_boolean(get(n1, "is_primary")), 1);
    cr_assert_eq(json_object_get_int(get(n1, "monitors_effective")), 100);
    cr_assert_eq(json_object_get_int(get(n1, "monitor_limit")), 1000);
    cr_assert_float_eq(json_object_get_double(get(n1, "usage_percent")), 10.0, 1e-9);
    cr_assert_float_eq(json_object_get_double(get(n1, "last_latency_ms")), 3.25, 1e-9);
    assert_type(get(o, "summary"), "nodes_total", json_type_int);
    json_object_put(o);
}

Test(api_json, capacity_counts_by_effective_node)
{
    json_object *o = roundtrip(api_doc_capacity(snap));
    json_object *nodes = get(o, "nodes");
    json_object *n9 = json_object_array_get_idx(nodes, 8);
    /* node09 is homed 180 monitors but runs (effectively) 40 */
    cr_assert_eq(json_object_get_int(get(n9, "effective")), 40);
    cr_assert_eq(json_object_get_int(get(n9, "home")), 180);
    cr_assert_float_eq(json_object_get_double(get(n9, "usage_percent")), 4.0, 1e-9);
    json_object *n3 = json_object_array_get_idx(nodes, 2);
    cr_assert_eq(json_object_get_int(get(n3, "available")), 880);
    json_object *t = get(o, "total");
    long long eff = 0;
    for (int i = 0; i < 10; i++)
        eff += snap->nodes[i].effective_monitors;
    cr_assert_eq(json_object_get_int64(get(t, "effective")), eff);
    /* capacity counts the nodes that can take monitors: 7 online + 1 suspect */
    cr_assert_eq(json_object_get_int64(get(t, "capacity")), 8000);
    json_object_put(o);
}

Test(api_json, rebalancing_shows_progress_and_balance)
{
    json_object *o = roundtrip(api_doc_rebalancing_status(snap, NULL));
    cr_assert_eq(json_object_get_boolean(get(o, "running")), 1);
    cr_assert_str_eq(json_object_get_string(get(o, "phase")), "applying");
    cr_assert_float_eq(json_object_get_double(get(o, "progress_percent")), 25.0, 1e-9);
    json_object *b = get(o, "balance");
    cr_assert_eq(json_object_get_int(get(b, "min")), 100);
    cr_assert_eq(json_object_get_int(get(b, "max")), 170);
    cr_assert_eq(json_object_array_length(get(o, "nodes")), 10);
    json_object_put(o);
}

Test(api_json, fault_detection_lists_stranded_nodes)
{
    snap->panic = true;
    snprintf(snap->panic_reason, sizeof snap->panic_reason, "9 of 10 nodes failed at once");
    json_object *o = roundtrip(api_doc_fault_detection_status(snap, NULL));
    cr_assert_eq(json_object_get_boolean(get(o, "panic")), 1);
    cr_assert_str_eq(json_object_get_string(get(o, "panic_reason")),
                     "9 of 10 nodes failed at once");
    json_object *st = get(o, "stranded_nodes");
    cr_assert_eq(json_object_array_length(st), 2); /* offline node09 and maintenance node10 */
    cr_assert_str_eq(json_object_get_string(get(json_object_array_get_idx(st, 0), "node_id")),
                     "node09");
    cr_assert_eq(json_object_get_int(get(o, "nodes_failing")), 2); /* suspect + offline */
    json_object_put(o);
}

Test(api_json, health_reports_starting_and_degraded)
{
    int st = 0;
    json_object *o = roundtrip(api_doc_health(NULL, FIX_T0, &st));
    cr_assert_eq(st, 503);
    cr_assert_str_eq(json_object_get_string(get(o, "status")), "starting");
    json_object_put(o);

    o = roundtrip(api_doc_health(snap, FIX_T0 + 2000, &st));
    cr_assert_eq(st, 200);
    cr_assert_str_eq(json_object_get_string(get(o, "status")), "ok");
    cr_assert_eq(json_object_get_boolean(get(o, "leader")), 1);
    cr_assert_eq(json_object_get_int(get(o, "snapshot_age_ms")), 2000);
    json_object_put(o);

    snap->db_ok = false;
    o = roundtrip(api_doc_health(snap, FIX_T0, &st));
    cr_assert_eq(st, 200, "a database outage degrades but does not fail the controller");
    cr_assert_str_eq(json_object_get_string(get(o, "db")), "down");
    cr_assert_str_eq(json_object_get_string(get(o, "status")), "degraded");
    json_object_put(o);
}

Test(api_json, lb_health_is_503_when_nothing_is_routable)
{
    int st = 0;
    json_object *o = roundtrip(api_doc_lb_health(snap, &st));
    cr_assert_eq(st, 200);
    cr_assert_eq(json_object_get_int(get(o, "nodes_routable")), 8);
    json_object_put(o);
    for (int i = 0; i < snap->n_nodes; i++)
        snap->nodes[i].state = NODE_OFFLINE;
    o = roundtrip(api_doc_lb_health(snap, &st));
    cr_assert_eq(st, 503);
    cr_assert_str_eq(json_object_get_string(get(o, "status")), "critical");
    json_object_put(o);
}

Test(api_json, available_nodes_are_the_routable_ones)
{
    snap->nodes[2].host_valid = false; /* never routed */
    json_object *o = roundtrip(api_doc_available_nodes(snap));
    json_object *a = get(o, "available_nodes");
    cr_assert_eq(json_object_array_length(a), 7); /* 8 routable minus the invalid host */
    cr_assert_eq(json_object_get_int(get(o, "total_count")), 7);
    json_object *first = json_object_array_get_idx(a, 0);
    cr_assert_str_eq(json_object_get_string(get(first, "set_url")), "/lb/fixed-node/node01");
    json_object_put(o);
}

Test(api_json, fixed_node_status_validates_the_cookie)
{
    json_object *o = roundtrip(api_doc_fixed_node_status(snap, NULL));
    cr_assert_eq(json_object_get_boolean(get(o, "has_fixed_node")), 0);
    cr_assert(json_object_is_type(get(o, "current_node"), json_type_null));
    json_object_put(o);

    o = roundtrip(api_doc_fixed_node_status(snap, "node02"));
    cr_assert_eq(json_object_get_boolean(get(o, "is_valid")), 1);
    cr_assert_str_eq(json_object_get_string(get(o, "current_node")), "node02");
    json_object_put(o);

    o = roundtrip(api_doc_fixed_node_status(snap, "node09"));
    cr_assert_eq(json_object_get_boolean(get(o, "is_valid")), 0);
    cr_assert(json_object_is_type(get(o, "invalid_reason"), json_type_string));
    json_object_put(o);

    o = roundtrip(api_doc_fixed_node_status(snap, "<script>"));
    cr_assert_eq(json_object_get_boolean(get(o, "has_fixed_node")), 1);
    cr_assert(json_object_is_type(get(o, "current_node"), json_type_null),
              "a malformed cookie value is not echoed");
    cr_assert_eq(json_object_get_boolean(get(o, "is_valid")), 0);
    json_object_put(o);
}

Test(api_json, fixed_node_refusal_codes)
{
    int st = 0;
    cr_assert_null(api_fixed_node_refusal(snap, "node01", &st));
    cr_assert_null(api_fixed_node_refusal(snap, "node08", &st), "suspect is still routed");
    cr_assert_not_null(api_fixed_node_refusal(snap, "nope", &st));
    cr_assert_eq(st, 404);
    cr_assert_not_null(api_fixed_node_refusal(snap, "node10", &st));
    cr_assert_eq(st, 409);
}

Test(api_json, history_page_has_next_before_only_when_full)
{
    kg_event ev[3];
    fixture_event(&ev[0], 30, EV_FAILOVER, "node02", "node02", "several", 12);
    fixture_event(&ev[1], 29, EV_REVERT, "node02", "several", "node02", 12);
    fixture_event(&ev[2], 28, EV_STATE_CHANGE, "node02", "online", "offline", 0);
    json_object *o = roundtrip(api_doc_history(ev, 3, 3));
    cr_assert_eq(json_object_get_int(get(o, "next_before")), 28);
    json_object *e0 = json_object_array_get_idx(get(o, "events"), 0);
    cr_assert_str_eq(json_object_get_string(get(e0, "kind")), "failover");
    assert_iso_time(e0, "time");
    cr_assert_eq(json_object_get_int(get(e0, "count")), 12);
    json_object_put(o);
    o = roundtrip(api_doc_history(ev, 3, 50));
    cr_assert(json_object_is_type(get(o, "next_before"), json_type_null));
    json_object_put(o);
}

Test(api_json, empty_strings_become_null_in_events)
{
    json_object *o = roundtrip(api_json_event(&snap->recent_events[2]));
    cr_assert(json_object_is_type(get(o, "node"), json_type_null));
    cr_assert_str_eq(json_object_get_string(get(o, "kind")), "nginx_reload");
    json_object_put(o);
}

Test(api_json, doubles_are_serialised_without_float_noise)
{
    snap->nodes[0].last_latency_ms = 0.1 + 0.2;
    json_object *n = api_json_node(&snap->nodes[0], 1000);
    size_t len;
    char *txt = api_json_dump(n, &len);
    json_object_put(n);
    cr_assert_not_null(strstr(txt, "\"last_latency_ms\":0.3,"), "%s", txt);
    free(txt);
}

Test(api_json, error_document_shape)
{
    json_object *o = roundtrip(api_doc_error("not_found", "no such endpoint"));
    cr_assert_str_eq(json_object_get_string(get(o, "error")), "not_found");
    cr_assert_str_eq(json_object_get_string(get(o, "detail")), "no such endpoint");
    cr_assert_eq(json_object_object_length(o), 2);
    json_object_put(o);
}

/* ------------------------------------------------------------------------------------------ */

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

Test(api_json, metrics_families_have_help_type_and_conventional_names)
{
    size_t len = 0;
    char *txt = api_metrics_render(snap, &len);
    cr_assert_not_null(txt);
    cr_assert_eq(strlen(txt), len);
    cr_assert(has_line(txt, "# TYPE kumaguard_failovers_total counter"));
    cr_assert(has_line(txt, "kumaguard_failovers_total 3"));
    cr_assert(has_line(txt, "kumaguard_reverts_total 2"));
    cr_assert(has_line(txt, "kumaguard_db_errors_total 6"));
    cr_assert(has_line(txt, "kumaguard_leader 1"));
    cr_assert(has_line(txt, "kumaguard_node_state{node=\"node09\",state=\"offline\"} 1"));
    cr_assert(has_line(txt, "kumaguard_node_state{node=\"node09\",state=\"online\"} 0"));
    cr_assert(has_line(txt, "kumaguard_node_monitors{node=\"node09\"} 40"));
    cr_assert(has_line(txt, "kumaguard_node_monitor_limit{node=\"node01\"} 1000"));
    cr_assert(has_line(txt, "kumaguard_node_consecutive_failures{node=\"node09\"} 5"));
    cr_assert(has_line(txt, "kumaguard_nginx_reloads_total{result=\"failed\"} 1"));
    cr_assert(has_line(txt, "kumaguard_node_probe_latency_seconds{node=\"node01\"} 0.00325"));
    /* histogram: cumulative buckets in seconds, +Inf equals _count */
    cr_assert(has_line(txt, "# TYPE kumaguard_probe_duration_seconds histogram"));
    cr_assert(has_line(txt, "kumaguard_probe_duration_seconds_bucket{le=\"0.005\"} 10"));
    cr_assert(has_line(txt, "kumaguard_probe_duration_seconds_bucket{le=\"0.025\"} 30"));
    cr_assert(has_line(txt, "kumaguard_probe_duration_seconds_bucket{le=\"+Inf\"} 38"));
    cr_assert(has_line(txt, "kumaguard_probe_duration_seconds_count 38"));
    cr_assert(has_line(txt, "kumaguard_probe_duration_seconds_sum 0.4005"));

    /* every sample belongs to a family announced by HELP and TYPE; counters end in _total */
    char *copy = strdup(txt);
    char *save = NULL;
    char family[128] = "", type[32] = "";
    int samples = 0;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (sscanf(line, "# TYPE %127s %31s", family, type) == 2) {
            cr_assert(strncmp(family, "kumaguard_", 10) == 0, "%s", family);
            if (strcmp(type, "counter") == 0)
                cr_assert(strlen(family) > 6 &&
                              strcmp(family + strlen(family) - 6, "_total") == 0,
                          "counter %s lacks _total", family);
            char help[160];
            snprintf(help, sizeof help, "# HELP %s ", family);
            cr_assert_not_null(strstr(txt, help), "no HELP for %s", family);
            continue;
        }
        cr_assert(strncmp(line, family, strlen(family)) == 0, "sample %s outside family %s",
                  line, family);
        samples++;
    }
    cr_assert_gt(samples, 100);
    free(copy);
    free(txt);
}

Test(api_json, metrics_escape_label_values)
{
    snprintf(snap->nodes[0].id, sizeof snap->nodes[0].id, "a\"b\\c");
    char *txt = api_metrics_render(snap, NULL);
    cr_assert_not_null(strstr(txt, "kumaguard_node_monitors{node=\"a\\\"b\\\\c\"} 100\n"), "%s",
                       txt);
    free(txt);
}

Test(api_json, sse_frame_is_one_event_with_id)
{
    char buf[1024];
    snprintf(snap->recent_events[1].reason, sizeof snap->recent_events[1].reason,
             "line one\nline two");
    int n = api_sse_format_event(&snap->recent_events[1], buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert(strncmp(buf, "id: 2\ndata: {", 13) == 0, "%s", buf);
    cr_assert(strcmp(buf + n - 3, "}\n\n") == 0);
    /* a newline inside the data would split the frame: it must be escaped */
    cr_assert_eq(strchr(buf + 13, '\n'), buf + n - 2);
    cr_assert_eq(api_sse_format_event(&snap->recent_events[1], buf, 16), -1);
}

/* Regression: the stream's frame buffer was once too small for an event whose every byte is
 * escaped, and such an event was silently dropped.  The largest possible event — every text
 * field full of bytes JSON escapes as \u00XX — fits the frame api_sse.c uses. */
Test(api_json, sse_frame_fits_the_largest_possible_event)
{
    kg_event e = {.id = INT64_MAX, .ts_ms = INT64_MAX / 2, .kind = EV_FAILOVER,
                  .count = INT32_MAX, .duration_ms = INT64_MAX};
    memset(e.node, 0x01, sizeof e.node - 1);
    memset(e.from, 0x02, sizeof e.from - 1);
    memset(e.to, 0x03, sizeof e.to - 1);
    memset(e.reason, 0x04, sizeof e.reason - 1);
    char buf[API_SSE_FRAME_MAX];
    int n = api_sse_format_event(&e, buf, sizeof buf);
    cr_assert_gt(n, 0, "the largest event does not fit the stream's frame");
    cr_assert(strstr(buf, "\\u0004\\u0004") != NULL);
}
