/* test_api_cache.c — the cached big documents (api_cache.h) are byte-for-byte what api_json.c
 * renders from the same snapshot, whatever happened between snapshots: nodes whose view
 * changed in any field, nodes that came or left (sorting anywhere), a new monitor limit.
 * Plus the Accept-Encoding rule (api_route.h). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_cache.h"
#include "api_json.h"
#include "api_route.h"
#include "snapshot.h"

enum { MAXN = 40 };

static kg_node_view model[MAXN];
static int n_model;
static unsigned seed = 4242;

static int rnd(int n) { return (int)(rand_r(&seed) % (unsigned)n); }

static void new_node(kg_node_view *v, int key)
{
    memset(v, 0, sizeof *v);
    snprintf(v->id, sizeof v->id, "n%03d", key);
    snprintf(v->name, sizeof v->name, "Kuma %d", key);
    snprintf(v->host, sizeof v->host, "10.0.%d.%d:3001", key / 200, key % 200 + 1);
    v->host_valid = true;
    v->state = NODE_ONLINE;
    v->prev_state = NODE_RECOVERING;
    v->proven = true;
    v->state_since_ms = 1795701600123LL;
    v->last_latency_ms = 2.5;
    v->n_latency = 1;
    v->latency_history[0] = 2.5;
    v->effective_monitors = v->home_monitors = 100 + key;
    v->reconcile.last_result = "none";
}

static int cmp_view(const void *a, const void *b)
{
    return strcmp(((const kg_node_view *)a)->id, ((const kg_node_view *)b)->id);
}

/* One random change of the kind a controller step makes. */
static void mutate(void)
{
    int what = rnd(10);
    if ((what == 0 && n_model < MAXN) || n_model == 0) {
        int key = rnd(999);
        for (int i = 0; i < n_model; i++)
            if (strcmp(model[i].id, "") != 0 && atoi(model[i].id + 1) == key)
                return; /* taken */
        new_node(&model[n_model++], key);
        qsort(model, (size_t)n_model, sizeof *model, cmp_view);
        return;
    }
    kg_node_view *v = &model[rnd(n_model)];
    switch (what) {
    case 1: /* the node left */
        *v = model[--n_model];
        qsort(model, (size_t)n_model, sizeof *model, cmp_view);
        break;
    case 2: /* a probe: bookkeeping */
        v->last_probe_ms += 1000;
        v->probes_total++;
        if (v->n_latency == KG_LATENCY_HISTORY) {
            memmove(v->latency_history, v->latency_history + 1,
                    sizeof(double) * (KG_LATENCY_HISTORY - 1));
            v->n_latency--;
        }
        v->last_latency_ms = rnd(2) ? -1 : rnd(100000) / 1000.0;
        v->latency_history[v->n_latency++] = v->last_latency_ms;
        break;
    case 3:
        v->prev_state = v->state;
        v->state = (node_state)rnd(NODE_STATE_COUNT);
        break;
    case 4:
        v->effective_monitors = rnd(3000);
        v->pinned_monitors = rnd(5);
        break;
    case 5: /* a shorter name leaves the old bytes behind the NUL: still the same text */
        snprintf(v->name, sizeof v->name, "%s", rnd(2) ? "k" : "a much longer name than before");
        break;
    case 6:
        snprintf(v->last_failure_reason, sizeof v->last_failure_reason, "HTTP %d", 500 + rnd(4));
        v->last_failure_ms = 1795701600123LL + rnd(100000);
        break;
    case 7:
        v->reconcile.pending_starts = rnd(20);
        v->reconcile.waiting = rnd(2) ? "cron" : NULL;
        v->reconcile.last_result = rnd(2) ? "ok" : "timeout";
        break;
    case 8:
        v->monitor_limit = rnd(3) ? 0 : 500 + rnd(1000);
        break;
    default:
        v->host_valid = !v->host_valid;
        break;
    }
}

static kg_snapshot *snap(int limit)
{
    kg_snapshot *s = snapshot_new(n_model);
    cr_assert_not_null(s);
    memcpy(s->nodes, model, sizeof *model * (size_t)n_model);
    s->monitor_limit = limit;
    s->built_ms = 1795701600123LL;
    s->monitors_total = 12345;
    return s;
}

static void expect_same(api_cache *c, kg_snapshot *s, int round)
{
    kg_config cfg;
    memset(&cfg, 0, sizeof cfg);
    for (int k = 0; k < API_DOC_COUNT; k++) {
        json_object *o = k == API_DOC_SYSTEM_STATUS ? api_doc_system_status(s, &cfg)
                                                    : api_doc_node_status(s);
        size_t want_len = 0, got_len = 0;
        char *want = api_json_dump(o, &want_len);
        json_object_put(o);
        char *got = api_cache_render(c, (api_doc_kind)k, s, &got_len);
        cr_assert_not_null(got);
        cr_assert_eq(got_len, want_len, "round %d doc %d: %zu bytes, want %zu", round, k,
                     got_len, want_len);
        cr_assert_str_eq(got, want, "round %d doc %d", round, k);
        free(got);
        free(want);
    }
}

Test(api_cache, renders_what_api_json_renders_across_random_changes)
{
    kg_config cfg;
    memset(&cfg, 0, sizeof cfg);
    api_cache *c = api_cache_new(&cfg);
    cr_assert_not_null(c);
    n_model = 0;
    for (int i = 0; i < 12; i++)
        new_node(&model[n_model++], i * 7);
    int limit = 1000;
    for (int round = 0; round < 400; round++) {
        int changes = 1 + rnd(4);
        for (int k = 0; k < changes; k++)
            mutate();
        if (rnd(40) == 0)
            limit = 500 + rnd(2000);
        kg_snapshot *s = snap(limit);
        expect_same(c, s, round);
        if (rnd(5) == 0)
            expect_same(c, s, round); /* the same snapshot again */
        snapshot_release(s);
    }
    api_cache_free(c);
}

Test(api_cache, an_unsorted_node_list_still_renders_right)
{
    kg_config cfg;
    memset(&cfg, 0, sizeof cfg);
    api_cache *c = api_cache_new(&cfg);
    n_model = 0;
    for (int i = 0; i < 6; i++)
        new_node(&model[n_model++], 50 - i);
    kg_snapshot *s = snap(1000); /* ids descending: the merge finds no match, renders all */
    expect_same(c, s, 0);
    snapshot_release(s);
    model[2].effective_monitors = 7;
    s = snap(1000);
    expect_same(c, s, 1);
    snapshot_release(s);
    api_cache_free(c);
}

Test(api_route, accept_encoding_gzip)
{
    cr_expect(api_accepts_gzip("gzip"));
    cr_expect(api_accepts_gzip("gzip, deflate, br"));
    cr_expect(api_accepts_gzip("br;q=1.0, GZip;q=0.5"));
    cr_expect(api_accepts_gzip("x-gzip"));
    cr_expect(api_accepts_gzip("deflate, *"));
    cr_expect(api_accepts_gzip(" gzip ; q=0.001"));
    cr_expect_not(api_accepts_gzip(NULL));
    cr_expect_not(api_accepts_gzip(""));
    cr_expect_not(api_accepts_gzip("identity"));
    cr_expect_not(api_accepts_gzip("deflate, br"));
    cr_expect_not(api_accepts_gzip("gzip;q=0"));
    cr_expect_not(api_accepts_gzip("gzip; q=0.000"));
    cr_expect_not(api_accepts_gzip("*, gzip;q=0"), "refused by name beats the wildcard");
    cr_expect_not(api_accepts_gzip("*;q=0"));
    cr_expect_not(api_accepts_gzip("gzipx, xgzip"));
    cr_expect(api_accepts_gzip("gzip;q=0, gzip"), "named twice: accepted once is enough");
}
