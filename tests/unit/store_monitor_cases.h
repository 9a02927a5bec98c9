/* store_monitor_cases.h — the store operations added for issue 14 (first-run setup status,
 * the per-monitor listing, guarded per-monitor changes), written once and run against SQLite
 * by test_store_sqlite.c and against a real MariaDB by test_store_mariadb.c.  Uses the
 * fixture and harness of store_cases.h (include that first). */
#ifndef KG_TEST_STORE_MONITOR_CASES_H
#define KG_TEST_STORE_MONITOR_CASES_H

#include "store_cases.h"

/* Ids of a page as "1,2,3" for readable assertions. */
static void page_ids(const store_monitor_page *p, char *out, size_t len)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p->n && off < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%lld", i ? "," : "",
                                (long long)p->rows[i].id);
}

/* Runs q (limit 100 unless set) and checks the ids it returns. */
static void expect_query(kg_store *s, store_monitor_query q, const char *want, const char *what)
{
    if (!q.limit)
        q.limit = 100;
    store_monitor_page p;
    char err[ERRLEN] = "", got[256];
    cr_assert_eq(s->ops->query_monitors(s, &q, &p, err, sizeof(err)), STORE_OK, "%s: %s", what,
                 err);
    page_ids(&p, got, sizeof(got));
    cr_expect_str_eq(got, want, "%s: got %s, want %s", what, got, want);
    store_free_page(&p);
}

static const store_monitor_query ANY = {.active = -1, .live = -1};

static void case_query_monitors(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    h->exec("UPDATE monitor SET name = 'Web 100% up' WHERE id = 1");
    h->exec("UPDATE monitor SET name = 'web_api' WHERE id = 7");
    h->exec("UPDATE monitor SET name = 'WEBSHOP' WHERE id = 8");

    /* every row, and what the rows say */
    store_monitor_query q = ANY;
    q.limit = 100;
    store_monitor_page p;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->query_monitors(s, &q, &p, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(p.n, 8);
    cr_expect(!p.more);
    cr_expect_eq(p.total, -1, "not counted unless asked");
    const store_monitor_row *r2 = &p.rows[1], *r3 = &p.rows[2], *r4 = &p.rows[3];
    const store_monitor_row *r5 = &p.rows[4], *r6 = &p.rows[5];
    cr_expect(r2->has_home && r2->has_over && r2->ours, "2 carries our failover override");
    cr_expect_str_eq(r2->home, "n2");
    cr_expect_str_eq(r2->over, "n3");
    cr_expect_str_eq(r2->over_reason, "seed");
    cr_expect_eq(r2->over_since_ms, 1704067200000LL, "2024-01-01T00:00:00Z");
    cr_expect(r3->has_over && !r3->ours && r3->over_reason[0] == '\0', "3 is a pin");
    cr_expect(!r4->has_home && !r4->has_over, "4 is homeless");
    cr_expect(r5->has_over && !r5->ours, "5: the record names another node: not ours");
    cr_expect(!r6->active && r6->has_home, "6 is paused");
    cr_expect_str_eq(p.rows[0].name, "Web 100% up");
    store_free_page(&p);

    q = ANY;
    int64_t ids[] = {2, 4, 99};
    q.ids = ids;
    q.n_ids = 3;
    expect_query(s, q, "2,4", "ids (99 does not exist)");
    q.n_ids = 0;
    expect_query(s, q, "", "an empty id list matches nothing");
    q = ANY;
    q.node = "n3";
    expect_query(s, q, "2,6,8", "effective node");
    q = ANY;
    q.home = "n1";
    expect_query(s, q, "1,3,7,8", "home");
    const struct {
        const char *search, *want;
    } searches[] = {
        {"100%", "1"},      /* % is literal */
        {"web", "1,7,8"},   /* case-insensitive substring */
        {"_", "7"},         /* _ is literal */
        {"8", "8"},         /* no name holds 8: the id does */
        {"'; DROP TABLE monitor; --", ""},
    };
    for (size_t i = 0; i < sizeof(searches) / sizeof(searches[0]); i++) {
        q = ANY;
        q.search = searches[i].search;
        expect_query(s, q, searches[i].want, searches[i].search);
    }
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM monitor"), 8, "the search is a value");
    q = ANY;
    q.active = 0;
    expect_query(s, q, "6", "inactive");
    q.active = 1;
    expect_query(s, q, "1,2,3,4,5,7,8", "active");
    const struct {
        store_override_filter f;
        const char *want;
    } overrides[] = {
        {STORE_OVR_NONE, "1,4,6"}, {STORE_OVR_OURS, "2,7,8"}, {STORE_OVR_PIN, "3,5"},
        {STORE_OVR_NOT_PIN, "1,2,4,6,7,8"},
    };
    for (size_t i = 0; i < sizeof(overrides) / sizeof(overrides[0]); i++) {
        q = ANY;
        q.override = overrides[i].f;
        expect_query(s, q, overrides[i].want, "override filter");
    }
    const char *live[] = {"n1", "n2"};
    q = ANY;
    q.live = 1;
    q.live_nodes = live;
    q.n_live = 2;
    expect_query(s, q, "1,5,7", "effective node live");
    q.live = 0;
    expect_query(s, q, "2,3,6,8", "effective node set and not live");
    q.n_live = 0;
    expect_query(s, q, "1,2,3,5,6,7,8", "no live node: every placed monitor");
    q.live = 1;
    expect_query(s, q, "", "no live node: nothing runs");
    q = ANY;
    q.unassigned = true;
    expect_query(s, q, "4", "unassigned");
    q = ANY;
    q.active = 1;
    q.override = STORE_OVR_PIN;
    q.node = "n9";
    expect_query(s, q, "3", "filters combine");

    /* keyset paging with the total beside it */
    q = ANY;
    q.limit = 3;
    q.want_total = true;
    const struct {
        int64_t after;
        const char *want;
        bool more;
    } pages[] = {{0, "1,2,3", true}, {3, "4,5,6", true}, {6, "7,8", false}};
    for (size_t i = 0; i < 3; i++) {
        q.after_id = pages[i].after;
        char got[64];
        cr_assert_eq(s->ops->query_monitors(s, &q, &p, err, sizeof(err)), STORE_OK, "%s", err);
        page_ids(&p, got, sizeof(got));
        cr_expect_str_eq(got, pages[i].want);
        cr_expect_eq(p.more, pages[i].more, "page after %lld", (long long)pages[i].after);
        cr_expect_eq(p.total, 8, "total ignores the page");
        store_free_page(&p);
    }
    q.limit = 0;
    cr_expect_eq(s->ops->query_monitors(s, &q, &p, err, sizeof(err)), STORE_ERROR);
    store_close(s);
}

/* A store holding the lease, fenced by its generation, as the controller's is. */
static kg_store *fenced_store(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    char err[ERRLEN] = "";
    bool leader = false;
    int64_t gen = 0;
    cr_assert_eq(s->ops->lease(s, "ctl-a", 10000, &leader, &gen, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_assert(leader);
    s->fence_generation = gen;
    return s;
}

static void case_monitor_changes(const store_harness *h)
{
    kg_store *s = fenced_store(h);
    seed_cluster(h);
    char err[ERRLEN] = "";
    size_t changed = 99;
    store_monitor_change ch[] = {
        /* 1: a new home (a kept move) */
        {.id = 1, .expect_home = "n1", .new_home = "n2", .record = STORE_RECORD_DELETE},
        /* 4: kumaguard's override, reverted like a failover */
        {.id = 4, .new_over = "n3", .record = STORE_RECORD_SET},
        /* 2: our failover override becomes an operator's pin elsewhere */
        {.id = 2, .expect_home = "n2", .expect_over = "n3", .new_home = "n2", .new_over = "n1",
         .record = STORE_RECORD_DELETE},
        /* 7: a pin where our override already points: only the ownership changes */
        {.id = 7, .expect_home = "n1", .expect_over = "n2", .new_home = "n1", .new_over = "n2",
         .record = STORE_RECORD_DELETE},
    };
    cr_assert_eq(s->ops->apply_monitor_changes(s, ch, 4, "move by tester", &changed, err,
                                               sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(changed, 3, "rows written (7 changes only its record)");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 1", "n2");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 4", "n3");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 2", "n1");
    expect_str(h, "SELECT reason FROM kumaguard_override WHERE monitor_id = 4",
               "move by tester");
    expect_str(h, "SELECT node_id FROM kumaguard_override WHERE monitor_id = 4", "n3");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id IN"
                              " (1, 2, 7)"), 0, "no record for a home, a pin or a pin");
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    cr_expect(find_monitor(&set, 4)->ours, "the reverting move is kumaguard's");
    cr_expect(!find_monitor(&set, 2)->ours && !find_monitor(&set, 7)->ours, "pins are not");
    store_free_monitors(&set);

    /* All or nothing: the second row no longer holds what the caller read. */
    store_monitor_change stale[] = {
        {.id = 1, .expect_home = "n2", .new_home = "n3"},
        {.id = 3, .expect_home = "n1", .new_home = "n1", .new_over = "n2"}, /* it has n9 */
    };
    err[0] = '\0';
    cr_expect_eq(s->ops->apply_monitor_changes(s, stale, 2, "x", &changed, err, sizeof(err)),
                 STORE_CONFLICT);
    cr_expect(strstr(err, "monitor 3") != NULL, "%s", err);
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 1", "n2");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 3", "n9");

    /* Another controller leads now: nothing is written. */
    h->exec("UPDATE kumaguard_leader SET generation = generation + 1 WHERE id = 1");
    store_monitor_change late = {.id = 1, .expect_home = "n2", .new_home = "n3"};
    cr_expect_eq(s->ops->apply_monitor_changes(s, &late, 1, "x", &changed, err, sizeof(err)),
                 STORE_FENCED);
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 1", "n2");
    expect_ids_intact(h, 8, 36);
    nametab_free(&tab);
    store_close(s);
}

static void case_setup_status(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    bool embedded = strcmp(s->ops->backend, "sqlite") == 0;
    char err[ERRLEN] = "";
    store_setup_state st;
    h->exec("DROP TABLE IF EXISTS `user`");
    cr_assert_eq(s->ops->setup_status(s, &st, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(st, STORE_SETUP_NOT_GATED, "no user table: not gated");
    h->exec("CREATE TABLE `user` (id INT PRIMARY KEY, username VARCHAR(255), active BOOLEAN)");
    cr_assert_eq(s->ops->setup_status(s, &st, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(st, embedded ? STORE_SETUP_NOT_GATED : STORE_SETUP_PENDING,
                 "empty user table");
    h->exec("INSERT INTO `user` (id, username, active) VALUES (1, 'admin', 1)");
    cr_assert_eq(s->ops->setup_status(s, &st, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(st, embedded ? STORE_SETUP_NOT_GATED : STORE_SETUP_COMPLETE, "a user");
    h->exec("DROP TABLE `user`");
    store_close(s);
}

#endif
