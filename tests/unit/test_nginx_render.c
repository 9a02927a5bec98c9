/* test_nginx_render.c — the template engine and the node selection of the nginx include
 * (nginx_render.h), driven with template text and node lists; no nginx here (test_nginx_feed.c
 * runs the output through a real nginx). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nginx_render.h"

static kg_node_view node(const char *id, const char *host, node_state st)
{
    kg_node_view v;
    memset(&v, 0, sizeof v);
    snprintf(v.id, sizeof v.id, "%s", id);
    snprintf(v.host, sizeof v.host, "%s", host);
    v.host_valid = true;
    v.state = st;
    return v;
}

static char *render_ok(const char *tmpl, const kg_node_view *nodes, int n, nginx_render_info *info)
{
    char *out = NULL, err[200] = "";
    size_t len = 0;
    int rc = nginx_render(tmpl, strlen(tmpl), nodes, n, &out, &len, info, err, sizeof err);
    cr_assert_eq(rc, 0, "render failed: %s", err);
    cr_assert_not_null(out);
    cr_assert_eq(strlen(out), len);
    return out;
}

static void render_fails(const char *tmpl, const char *want_in_err)
{
    char *out = (char *)1, err[200] = "";
    size_t len = 7;
    nginx_render_info info;
    kg_node_view n1 = node("n1", "h1:1", NODE_ONLINE);
    int rc = nginx_render(tmpl, strlen(tmpl), &n1, 1, &out, &len, &info, err, sizeof err);
    cr_expect_eq(rc, -1, "template should be refused: %s", tmpl);
    cr_expect_null(out);
    cr_expect(strstr(err, want_in_err), "error '%s' should mention '%s'", err, want_in_err);
    cr_expect_not(nginx_render_check(tmpl, strlen(tmpl), NULL, 0));
}

static char *default_template(void)
{
    const char *src = getenv("KG_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/web/templates/nginx-upstream.conf.tmpl", src ? src : ".");
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s (set KG_SOURCE_DIR)", path);
    static char buf[NGINX_TEMPLATE_MAX + 1];
    size_t n = fread(buf, 1, NGINX_TEMPLATE_MAX, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int c = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        c++;
    return c;
}

/* ---- engine ------------------------------------------------------------------------------ */

Test(render_engine, values_lists_and_standalone_lines)
{
    kg_node_view ns[] = {node("b", "hb:2", NODE_ONLINE), node("a", "ha:1", NODE_OFFLINE)};
    nginx_render_info info;
    char *out = render_ok("x {{node_count}}/{{routable_count}}\n"
                          "{{#nodes}}\n"
                          "  [{{id}}={{host}}]\n"
                          "{{/nodes}}\n"
                          "  {{! a comment line vanishes }}\n"
                          "{{#routable}}<{{ id }}>{{/routable}}|\n",
                          ns, 2, &info);
    cr_expect_str_eq(out, "x 2/1\n  [a=ha:1]\n  [b=hb:2]\n<b>|\n");
    cr_expect_eq(info.known_nodes, 2);
    cr_expect_eq(info.routable_nodes, 1);
    cr_expect_eq(info.cluster_nodes, 1);
    cr_expect_not(info.fallback_all);
    free(out);
}

Test(render_engine, inverted_sections_and_fallback_flag)
{
    const char *t = "{{#fallback}}F{{/fallback}}{{^fallback}}N{{/fallback}}"
                    "{{^routable}}none{{/routable}}{{#cluster}}[{{id}}]{{/cluster}}";
    nginx_render_info info;
    kg_node_view up = node("a", "h:1", NODE_ONLINE);
    char *out = render_ok(t, &up, 1, &info);
    cr_expect_str_eq(out, "N[a]");
    free(out);
    kg_node_view down = node("a", "h:1", NODE_OFFLINE);
    out = render_ok(t, &down, 1, &info);
    cr_expect_str_eq(out, "Fnone[a]");
    cr_expect(info.fallback_all);
    free(out);
}

Test(render_engine, text_without_tags_and_empty_template)
{
    nginx_render_info info;
    char *out = render_ok("plain { text } with } braces {\n", NULL, 0, &info);
    cr_expect_str_eq(out, "plain { text } with } braces {\n");
    free(out);
    out = render_ok("", NULL, 0, &info);
    cr_expect_str_eq(out, "");
    free(out);
}

Test(render_engine, template_errors_are_reported_with_line)
{
    render_fails("ok\n{{nope}}", "line 2");
    render_fails("{{nope}}", "unknown name 'nope'");
    render_fails("{{#nodes}}x", "never closed");
    render_fails("{{/nodes}}", "closes nothing");
    render_fails("{{#nodes}}{{/routable}}", "closes nothing");
    render_fails("{{#nodes}}{{#cluster}}{{/cluster}}{{/nodes}}", "nested");
    render_fails("{{id}}", "outside a node list");
    render_fails("{{#id}}{{/id}}", "not a section");
    render_fails("{{nodes}}", "not a value");
    render_fails("abc {{ id", "unclosed");
    char with_nul[] = "a\0b";
    char *out = NULL, err[100] = "";
    size_t len;
    nginx_render_info info;
    cr_expect_eq(nginx_render(with_nul, 3, NULL, 0, &out, &len, &info, err, sizeof err), -1);
    cr_expect(nginx_render_check("{{#nodes}}{{id}}{{/nodes}}", 26, err, sizeof err));
}

Test(render_engine, deterministic_whatever_the_input_order)
{
    kg_node_view a[] = {node("n3", "h3:3", NODE_ONLINE), node("n1", "h1:1", NODE_ONLINE),
                        node("n2", "h2:2", NODE_SUSPECT)};
    kg_node_view b[] = {a[1], a[2], a[0]};
    nginx_render_info info;
    const char *t = default_template();
    char *x = render_ok(t, a, 3, &info);
    char *y = render_ok(t, b, 3, &info);
    char *z = render_ok(t, a, 3, &info);
    cr_expect_str_eq(x, y);
    cr_expect_str_eq(x, z);
    free(x);
    free(y);
    free(z);
}

/* ---- the shipped template ------------------------------------------------------------------ */

Test(render_default, cluster_per_node_upstreams_and_cookie_map)
{
    kg_node_view ns[] = {
        node("node2", "10.0.0.2:3001", NODE_ONLINE),
        node("node1", "10.0.0.1:3001", NODE_SUSPECT),   /* still routed */
        node("node3", "10.0.0.3:3001", NODE_OFFLINE),
        node("node4", "10.0.0.4:3001", NODE_DRAINING),  /* still routed */
        node("node5", "10.0.0.5:3001", NODE_RECOVERING),
        node("node6", "10.0.0.6:3001", NODE_MAINTENANCE),
        node("node7", "[::1]:3001", NODE_UNKNOWN),
    };
    nginx_render_info info;
    char *out = render_ok(default_template(), ns, 7, &info);

    cr_expect_eq(info.cluster_nodes, 3);
    cr_expect_eq(info.routable_nodes, 3);
    cr_expect_eq(info.known_nodes, 7);
    cr_expect_eq(info.rejected_nodes, 0);
    cr_expect_not(info.fallback_all);
    cr_expect_null(strstr(out, "FALLBACK"));

    /* kuma_cluster: the routable nodes in id order, with socket.io stickiness */
    const char *cl = strstr(out, "upstream kuma_cluster {");
    cr_assert_not_null(cl);
    const char *cl_end = strchr(cl, '}');
    const char *s1 = strstr(cl, "server 10.0.0.1:3001 max_fails=1 fail_timeout=5s;");
    const char *s2 = strstr(cl, "server 10.0.0.2:3001 max_fails=1 fail_timeout=5s;");
    const char *s4 = strstr(cl, "server 10.0.0.4:3001 max_fails=1 fail_timeout=5s;");
    cr_expect(s1 && s2 && s4 && s1 < s2 && s2 < s4 && s4 < cl_end, "%s", out);
    cr_expect(strstr(cl, "hash $remote_addr consistent;") < cl_end);
    cr_expect(strstr(cl, "keepalive") < cl_end);
    for (const char *p = cl; p < cl_end; p++) /* no non-routable node inside the block */
        cr_expect(strncmp(p, "10.0.0.3", 8) && strncmp(p, "10.0.0.5", 8) &&
                  strncmp(p, "10.0.0.6", 8) && strncmp(p, "[::1]", 5));

    /* one upstream per known node, routable or not */
    cr_expect_eq(count(out, "\nupstream kuma_node_"), 7);
    cr_expect(strstr(out, "upstream kuma_node_node3 {\n    server 10.0.0.3:3001;"));
    cr_expect(strstr(out, "upstream kuma_node_node7 {\n    server [::1]:3001;"));

    /* the cookie map pins only to routable nodes; default is the cluster */
    const char *map = strstr(out, "map $cookie_KUMA_FIXED_NODE $kuma_upstream {");
    cr_assert_not_null(map);
    cr_expect(strstr(map, "default kuma_cluster;"));
    cr_expect(strstr(map, "\n    node1 kuma_node_node1;"));
    cr_expect(strstr(map, "\n    node2 kuma_node_node2;"));
    cr_expect(strstr(map, "\n    node4 kuma_node_node4;"));
    cr_expect_null(strstr(map, " node3 "));
    cr_expect_null(strstr(map, " node5 "));
    cr_expect_null(strstr(map, " node6 "));
    cr_expect_null(strstr(map, " node7 "));
    cr_expect_null(strstr(out, "{{"), "no placeholder left behind");
    free(out);
}

/* nginx's map reads these words as its own parameters unless escaped with a backslash; a
 * node named "default" used to produce a duplicate default and fail validation for good. */
Test(render_default, map_keys_that_are_nginx_keywords_are_escaped)
{
    kg_node_view ns[] = {
        node("default", "10.0.0.1:3001", NODE_ONLINE),
        node("include", "10.0.0.2:3001", NODE_ONLINE),
        node("hostnames", "10.0.0.3:3001", NODE_ONLINE),
        node("volatile", "10.0.0.4:3001", NODE_ONLINE),
        node("node1", "10.0.0.5:3001", NODE_ONLINE),
    };
    nginx_render_info info;
    char *out = render_ok(default_template(), ns, 5, &info);
    const char *map = strstr(out, "map $cookie_KUMA_FIXED_NODE $kuma_upstream {");
    cr_assert_not_null(map);
    cr_expect(strstr(map, "\n    \\default kuma_node_default;"), "%s", map);
    cr_expect(strstr(map, "\n    \\include kuma_node_include;"), "%s", map);
    cr_expect(strstr(map, "\n    \\hostnames kuma_node_hostnames;"), "%s", map);
    cr_expect(strstr(map, "\n    \\volatile kuma_node_volatile;"), "%s", map);
    /* and nothing else is escaped: "\n..." would be read as a newline */
    cr_expect(strstr(map, "\n    node1 kuma_node_node1;"), "%s", map);
    cr_expect_eq(count(map, "\\"), 4);
    free(out);
}

/* Issue 13 #2: a map key of 47 bytes or more does not fit nginx's default hash bucket.  Ids up
 * to 46 characters stay plain keys; longer ones (the column allows 50) become an anchored
 * case-insensitive pattern with the dots escaped, so "a.b" never matches "axb".  The empty
 * cookie is its own key, so requests without one never reach the patterns. */
Test(render_default, ids_longer_than_46_become_anchored_patterns)
{
    kg_node_view ns[] = {
        node("n-46-characters-long-0123456789-0123456789-abc", "10.0.0.1:3001", NODE_ONLINE),
        node("n.47.characters.long.0123456789.0123456789.abcd", "10.0.0.2:3001", NODE_ONLINE),
        node("N-50_characters_long-0123456789-0123456789-abcdefg", "10.0.0.3:3001",
             NODE_ONLINE),
    };
    cr_assert_eq(strlen(ns[0].id), 46);
    cr_assert_eq(strlen(ns[1].id), 47);
    cr_assert_eq(strlen(ns[2].id), 50);
    nginx_render_info info;
    char *out = render_ok(default_template(), ns, 3, &info);
    cr_expect_eq(info.rejected_nodes, 0);
    const char *map = strstr(out, "map $cookie_KUMA_FIXED_NODE $kuma_upstream {");
    cr_assert_not_null(map);
    cr_expect(strstr(map, "\n    \"\" kuma_cluster;\n"), "%s", map);
    cr_expect(strstr(map, "\n    n-46-characters-long-0123456789-0123456789-abc"
                          " kuma_node_n-46-characters-long-0123456789-0123456789-abc;"),
              "%s", map);
    cr_expect(strstr(map, "\n    \"~*^n\\.47\\.characters\\.long\\.0123456789\\.0123456789"
                          "\\.abcd$\" kuma_node_n.47.characters.long.0123456789.0123456789.abcd;"),
              "%s", map);
    cr_expect(strstr(map, "\n    \"~*^N-50_characters_long-0123456789-0123456789-abcdefg$\""
                          " kuma_node_N-50_characters_long-0123456789-0123456789-abcdefg;"),
              "%s", map);
    /* the upstreams keep the plain names */
    cr_expect(strstr(out, "upstream kuma_node_n.47.characters.long.0123456789.0123456789.abcd {"));
    free(out);
}

Test(render_default, no_routable_node_lists_every_known_node)
{
    kg_node_view ns[] = {
        node("b", "10.0.0.2:3001", NODE_OFFLINE),
        node("a", "10.0.0.1:3001", NODE_RECOVERING),
        node("c", "10.0.0.3:3001", NODE_MAINTENANCE), /* operator took it out: stays out */
    };
    nginx_render_info info;
    char *out = render_ok(default_template(), ns, 3, &info);
    cr_expect(info.fallback_all);
    cr_expect_eq(info.cluster_nodes, 2);
    cr_expect_eq(info.routable_nodes, 0);
    const char *cl = strstr(out, "upstream kuma_cluster {");
    cr_assert_not_null(cl);
    const char *cl_end = strchr(cl, '}');
    cr_expect(strstr(cl, "FALLBACK") && strstr(cl, "FALLBACK") < cl_end,
              "the fallback is said in a comment");
    cr_expect(strstr(cl, "server 10.0.0.1:3001") < cl_end);
    cr_expect(strstr(cl, "server 10.0.0.2:3001") < cl_end);
    cr_expect(strstr(cl, "server 10.0.0.3:3001") > cl_end || !strstr(cl, "server 10.0.0.3:3001"));
    const char *map = strstr(out, "map $cookie_KUMA_FIXED_NODE");
    cr_expect_null(strstr(map, "kuma_node_"), "no pin while nothing is routable");
    free(out);
}

Test(render_default, no_node_at_all_still_gives_a_valid_upstream)
{
    nginx_render_info info;
    char *out = render_ok(default_template(), NULL, 0, &info);
    cr_expect(strstr(out, "upstream kuma_cluster {"));
    cr_expect(strstr(out, "server 127.0.0.1:9 down;"), "an upstream block needs a server");
    cr_expect_eq(info.cluster_nodes, 0);
    cr_expect(strstr(out, "default kuma_cluster;"));
    free(out);
}

/* ---- hostile input ------------------------------------------------------------------------- */

Test(render_hostile, bad_hosts_and_ids_never_reach_the_output)
{
    static const char *bad_hosts[] = {
        "evil1:3001;",
        "evil2:3001\n}\nserver { listen 81; }",
        "evil3:3001 backup",
        "evil4{:3001",
        "evil5:0",
        "evil6:65536",
        "evil7:port",
        "evil8:3001/path",
        "http://evil9:3001",
        "evil10",
        "",
        "evil12\":3001",
        "evil13:3001#",
        "evil14:3001\r",
    };
    int nbad = (int)(sizeof bad_hosts / sizeof bad_hosts[0]);
    kg_node_view ns[40];
    int n = 0;
    for (int i = 0; i < nbad; i++) {
        char id[16];
        snprintf(id, sizeof id, "evilid%d", i);
        ns[n++] = node(id, bad_hosts[i], NODE_ONLINE); /* host_valid=true: must not be trusted */
    }
    kg_node_view longhost = node("evillong", "", NODE_ONLINE);
    memset(longhost.host, 'e', 300 > KG_HOST_MAX ? KG_HOST_MAX : 300);
    longhost.host[KG_HOST_MAX] = 0;
    ns[n++] = longhost;
    static const char *bad_ids[] = {"evil id", "evil;id", "evil{", "evil\nid", "evil\"",
                                    "", "evil/id", "\xc3\xa9vil"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        ns[n++] = node(bad_ids[i], "10.9.9.9:3001", NODE_ONLINE);
    kg_node_view unterminated = node("x", "10.9.9.8:3001", NODE_ONLINE);
    memset(unterminated.id, 'e', sizeof unterminated.id); /* no NUL anywhere */
    ns[n++] = unterminated;
    kg_node_view unterminated_host = node("evilnonul", "", NODE_ONLINE);
    memset(unterminated_host.host, '1', sizeof unterminated_host.host);
    ns[n++] = unterminated_host;
    kg_node_view flagged = node("evilflag", "10.9.9.7:3001", NODE_ONLINE);
    flagged.host_valid = false; /* the health module said no: respected too */
    ns[n++] = flagged;
    ns[n++] = node("good", "10.0.0.1:3001", NODE_ONLINE);

    nginx_render_info info;
    char *out = render_ok(default_template(), ns, n, &info);
    cr_expect_eq(info.rejected_nodes, n - 1);
    cr_expect_eq(info.known_nodes, 1);
    cr_expect_eq(info.cluster_nodes, 1);
    cr_expect_null(strstr(out, "evil"), "a rejected node left a trace:\n%s", out);
    cr_expect_null(strstr(out, "10.9.9."));
    cr_expect_null(strstr(out, "eeeeeeee"));
    cr_expect_null(strstr(out, "11111111"));
    cr_expect_null(strstr(out, "listen 81"));
    cr_expect(strstr(out, "server 10.0.0.1:3001 max_fails=1 fail_timeout=5s;"));
    cr_expect(strstr(out, "\n    good kuma_node_good;"));
    cr_expect_eq(count(out, "server "), 2, "the good node twice (cluster + own upstream)");
    /* the rejection summary is printable text naming some of the nodes and why */
    cr_expect(strstr(info.rejected, "evilid0: invalid host"), "%s", info.rejected);
    for (const char *p = info.rejected; *p; p++)
        cr_expect(*p >= 0x20 && *p < 0x7f, "non-printable byte in the summary");
    free(out);
}

Test(render_hostile, ids_equal_ignoring_case_keep_one)
{
    /* nginx compares upstream names and map keys without case: both would break `nginx -t` */
    kg_node_view ns[] = {node("node1", "10.0.0.1:1", NODE_ONLINE),
                         node("Node1", "10.0.0.2:1", NODE_ONLINE),
                         node("node1", "10.0.0.3:1", NODE_ONLINE)};
    nginx_render_info info;
    char *out = render_ok(default_template(), ns, 3, &info);
    cr_expect_eq(info.known_nodes, 1);
    cr_expect_eq(info.rejected_nodes, 2);
    cr_expect_eq(count(out, "\nupstream kuma_node_"), 1);
    /* strcmp order: "Node1" < "node1"; of the two "node1" the earlier input wins */
    cr_expect(strstr(out, "upstream kuma_node_Node1 {\n    server 10.0.0.2:1;"), "%s", out);
    cr_expect(strstr(info.rejected, "duplicate"));
    free(out);
}

/* The rule, stated the slow way: in strcmp order of the ids (input order between identical
 * ids), a node is kept unless a node kept before it has the same id ignoring case.  Random
 * lists of ids drawn from a few letters in both cases (so groups interleave: "Ab" < "B" < "aB")
 * must keep exactly those nodes, in that order. */
static int cmp_pos_by_id(const void *a, const void *b, void *arg)
{
    const kg_node_view *ns = arg;
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(ns[x].id, ns[y].id);
    return c ? c : (x > y) - (x < y);
}

Test(render_hostile, ids_equal_ignoring_case_keep_the_first_in_id_order)
{
    enum { ROUNDS = 300, MAXN = 60 };
    const char *tmpl = "{{#nodes}}{{id}}={{host}}\n{{/nodes}}";
    unsigned seed = 12345;
    for (int round = 0; round < ROUNDS; round++) {
        kg_node_view ns[MAXN];
        int n = 1 + (int)(rand_r(&seed) % MAXN);
        for (int i = 0; i < n; i++) {
            char id[8];
            int len = 1 + (int)(rand_r(&seed) % 3);
            for (int k = 0; k < len; k++) {
                char c = "abc"[rand_r(&seed) % 3];
                id[k] = rand_r(&seed) % 2 ? (char)(c - 'a' + 'A') : c;
            }
            id[len] = 0;
            char host[32];
            snprintf(host, sizeof host, "10.0.%d.%d:1", round % 250, i + 1);
            ns[i] = node(id, host, NODE_ONLINE);
        }
        /* the slow rule */
        int pos[MAXN], kept[MAXN], n_kept = 0;
        for (int i = 0; i < n; i++)
            pos[i] = i;
        qsort_r(pos, (size_t)n, sizeof *pos, cmp_pos_by_id, ns);
        for (int i = 0; i < n; i++) {
            bool dup = false;
            for (int k = 0; k < n_kept && !dup; k++)
                dup = strcasecmp(ns[kept[k]].id, ns[pos[i]].id) == 0;
            if (!dup)
                kept[n_kept++] = pos[i];
        }
        char want[MAXN * 32] = "";
        for (int k = 0; k < n_kept; k++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s=%s\n",
                     ns[kept[k]].id, ns[kept[k]].host);
        nginx_render_info info;
        char *out = render_ok(tmpl, ns, n, &info);
        cr_assert_str_eq(out, want, "round %d", round);
        cr_assert_eq(info.rejected_nodes, n - n_kept, "round %d", round);
        free(out);
    }
}

Test(render_hostile, many_nodes_and_long_output)
{
    enum { N = 500 };
    kg_node_view *ns = calloc(N, sizeof *ns);
    cr_assert_not_null(ns);
    for (int i = 0; i < N; i++) {
        char id[16], host[32];
        snprintf(id, sizeof id, "n%03d", i);
        snprintf(host, sizeof host, "10.1.%d.%d:3001", i / 250, i % 250 + 1);
        ns[i] = node(id, host, i % 2 ? NODE_ONLINE : NODE_OFFLINE);
    }
    nginx_render_info info;
    char *out = render_ok(default_template(), ns, N, &info);
    cr_expect_eq(info.known_nodes, N);
    cr_expect_eq(info.cluster_nodes, N / 2);
    cr_expect_eq(count(out, "\nupstream kuma_node_"), N);
    const char *map = strstr(out, "map $cookie_KUMA_FIXED_NODE");
    cr_assert_not_null(map);
    cr_expect_eq(count(map, " kuma_node_"), N / 2);
    free(out);
    free(ns);
}
