/* store_cases.h — the behaviour every store backend must show, written once and run against
 * SQLite by test_store_sqlite.c and against a real MariaDB by test_store_mariadb.c.
 *
 * A harness gives the cases a fresh store handle and a separate raw connection to the same
 * database, which plays "a Kuma node" or "an operator" changing rows behind the store's back.
 * Every case starts on an empty database (the test file's init takes care of that). */
#ifndef KG_TEST_STORE_CASES_H
#define KG_TEST_STORE_CASES_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nametab.h"
#include "store.h"

typedef struct {
    kg_store *(*open)(void);                 /* new store on the test database */
    void (*exec)(const char *sql);           /* raw SQL on the side connection; must succeed */
    long long (*query_int)(const char *sql); /* first column of the first row; -1 if NULL/none */
    /* first column of the first row into buf; "(null)" for NULL or no row */
    void (*query_str)(const char *sql, char *buf, size_t len);
    const char *widen_node_sql;              /* makes node.host/node_name wide, or NULL */
    int settle_ms; /* how long after a change the store's change probe may still say
                      "changed" whatever happens (MariaDB: its probe's settle time) */
} store_harness;

#define ERRLEN 512

/* ---- helpers ------------------------------------------------------------------------------ */

static kg_store *open_with_schema(const store_harness *h)
{
    kg_store *s = h->open();
    cr_assert_not_null(s);
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->ensure_schema(s, true, err, sizeof(err)), STORE_OK, "%s", err);
    return s;
}

/* Inserts monitors first..first+count-1 with the given home (NULL = none), 1000 per row set. */
static void insert_monitors(const store_harness *h, long first, long count, const char *home)
{
    size_t cap = 64 + 1000 * 64;
    char *sql = malloc(cap);
    cr_assert_not_null(sql);
    for (long done = 0; done < count;) {
        size_t len = (size_t)snprintf(sql, cap,
                                      "INSERT INTO monitor (id, name, active, node_id) VALUES ");
        for (long k = 0; k < 1000 && done < count; k++, done++) {
            char home_lit[64];
            snprintf(home_lit, sizeof(home_lit), home ? "'%s'" : "NULL", home);
            len += (size_t)snprintf(sql + len, cap - len, "%s(%ld, 'm%ld', 1, %s)",
                                    k ? "," : "", first + done, first + done, home_lit);
        }
        h->exec(sql);
    }
    free(sql);
}

/* The shared fixture, with each kind of row the planner distinguishes:
 *   1 home n1                       -> plain
 *   2 home n2, override n3, ours    -> our failover (record says n3)
 *   3 home n1, override n9          -> manual pin (no record)
 *   4 no home, no override          -> homeless
 *   5 home n2, override n1          -> record says n3: an operator re-pinned it, not ours
 *   6 home n3, inactive
 *   7 home n1, override n2, ours
 *   8 home n1, override n3, ours */
static void seed_cluster(const store_harness *h)
{
    h->exec("INSERT INTO node (node_id, node_name, host) VALUES ('n1', 'n1', 'h1:3001'),"
            " ('n2', 'n2', 'h2:3001'), ('n3', 'n3', 'h3:3001')");
    h->exec("INSERT INTO monitor (id, name, active, node_id, assigned_node) VALUES"
            " (1, 'm1', 1, 'n1', NULL), (2, 'm2', 1, 'n2', 'n3'), (3, 'm3', 1, 'n1', 'n9'),"
            " (4, 'm4', 1, NULL, NULL), (5, 'm5', 1, 'n2', 'n1'), (6, 'm6', 0, 'n3', NULL),"
            " (7, 'm7', 1, 'n1', 'n2'), (8, 'm8', 1, 'n1', 'n3')");
    h->exec("INSERT INTO kumaguard_override (monitor_id, node_id, home_node, reason, created_at)"
            " VALUES (2, 'n3', 'n2', 'seed', '2024-01-01 00:00:00'),"
            " (5, 'n3', 'n2', 'seed', '2024-01-01 00:00:00'),"
            " (7, 'n2', 'n1', 'seed', '2024-01-01 00:00:00'),"
            " (8, 'n3', 'n1', 'seed', '2024-01-01 00:00:00')");
}

static void load_all(kg_store *s, kg_nametab *tab, store_monitor_set *set)
{
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->load_monitors(s, tab, set, err, sizeof(err)), STORE_OK, "%s", err);
}

static const plan_monitor *find_monitor(const store_monitor_set *set, int64_t id)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->monitors[i].id == id)
            return &set->monitors[i];
    cr_assert_fail("monitor %lld not loaded", (long long)id);
    return NULL;
}

static int32_t idx(kg_nametab *tab, const char *name)
{
    int32_t i = nametab_intern(tab, name, strlen(name));
    cr_assert_geq(i, 0);
    return i;
}

/* A move whose guard is what `m` looked like when loaded. */
static plan_move move_for(const plan_monitor *m, plan_move_kind kind, int32_t to, bool clear)
{
    plan_move mv = {.monitor_id = m->id, .kind = (uint8_t)kind, .clear_override = clear,
                    .to = to, .expect_active = m->active, .expect_home = m->home,
                    .expect_over = m->over};
    return mv;
}

static void expect_str(const store_harness *h, const char *sql, const char *want)
{
    char got[512];
    h->query_str(sql, got, sizeof(got));
    cr_expect_str_eq(got, want, "%s -> %s, want %s", sql, got, want);
}

/* Invariant 1 of SPEC section 3: the multiset of monitor ids never changes. */
static void expect_ids_intact(const store_harness *h, long long count, long long sum)
{
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM monitor"), count, "monitor count changed");
    cr_expect_eq(h->query_int("SELECT COUNT(DISTINCT id) FROM monitor"), count,
                 "duplicate monitor ids");
    cr_expect_eq(h->query_int("SELECT SUM(id) FROM monitor"), sum, "monitor ids changed");
}

/* ---- cases -------------------------------------------------------------------------------- */

static void case_schema_idempotent(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->ensure_schema(s, true, err, sizeof(err)), STORE_OK, "%s", err);
    seed_cluster(h);
    /* Again, on a second handle: nothing is recreated or lost. */
    kg_store *s2 = h->open();
    cr_assert_eq(s2->ops->ensure_schema(s2, true, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(s2->ops->ensure_schema(s2, false, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM monitor"), 8);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM node"), 3);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override"), 4);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_event"), 0);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_leader"), 0);
    cr_expect_eq(s->ops->ping(s, err, sizeof(err)), STORE_OK, "%s", err);
    store_close(s2);
    store_close(s);
}

static void case_nodes(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->upsert_node(s, "n2", "h2:3001", err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(s->ops->upsert_node(s, "n1", "h1:3001", err, sizeof(err)), STORE_OK, "%s", err);
    /* An operator (or a Kuma node) marked n1 offline; our upsert changes only the host. */
    h->exec("UPDATE node SET status = 'offline' WHERE node_id = 'n1'");
    cr_assert_eq(s->ops->upsert_node(s, "n1", "h1b:3002", err, sizeof(err)), STORE_OK, "%s",
                 err);

    store_node_row *rows = NULL;
    size_t n = 0;
    cr_assert_eq(s->ops->load_nodes(s, &rows, &n, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(rows[0].id, "n1"); /* ordered by id */
    cr_expect_str_eq(rows[0].name, "n1");
    cr_expect_str_eq(rows[0].host, "h1b:3002");
    cr_expect_str_eq(rows[0].status, "offline");
    cr_expect_str_eq(rows[1].id, "n2");
    cr_expect_str_eq(rows[1].status, "online", "a new static node starts online");
    cr_expect(rows[1].active);
    cr_expect_not(rows[1].is_primary);
    cr_expect_eq(rows[1].last_seen_ms, 0);
    free(rows);

    /* 1700000000123 ms = 2023-11-14 22:13:20.123 UTC */
    store_node_state st[2] = {{.id = "n1", .status = "online", .last_seen_ms = 1700000000123LL},
                              {.id = "n2", .status = "recovering", .last_seen_ms = 0}};
    cr_assert_eq(s->ops->write_node_states(s, st, 2, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(s->ops->load_nodes(s, &rows, &n, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(rows[0].status, "online");
    cr_expect_eq(rows[0].last_seen_ms, 1700000000000LL);
    cr_expect_str_eq(rows[1].status, "recovering");
    cr_expect_eq(rows[1].last_seen_ms, 0, "last_seen is only written when > 0");
    free(rows);
    expect_str(h, "SELECT last_seen FROM node WHERE node_id = 'n1'", "2023-11-14 22:13:20");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM node WHERE modified_date IS NULL"), 0);
    store_close(s);
}

/* Node states of many nodes in one call (a leader writes last_seen of every node each
 * refresh; the MariaDB store batches them): every row gets its own status and time, ids that
 * need escaping included, a NULL status and a zero time leave the column alone. */
static void case_node_states_many(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    char err[ERRLEN] = "";
    enum { N = 601 };
    static store_node_state st[N];
    static const char *const words[] = {"online", "offline", "recovering", "maintenance"};
    for (int i = 0; i < N; i++) {
        if (i == 7)
            snprintf(st[i].id, sizeof st[i].id, "o'brien\\%d", i);
        else
            snprintf(st[i].id, sizeof st[i].id, "node-%04d", i);
        cr_assert_eq(s->ops->upsert_node(s, st[i].id, "h:3001", err, sizeof(err)), STORE_OK,
                     "%s", err);
        st[i].status = i % 5 == 4 ? NULL : words[i % 4];
        st[i].last_seen_ms = i % 3 == 2 ? 0 : 1700000000000LL + i * 1000LL;
    }
    cr_assert_eq(s->ops->write_node_states(s, st, N, err, sizeof(err)), STORE_OK, "%s", err);
    store_node_row *rows = NULL;
    size_t n = 0;
    cr_assert_eq(s->ops->load_nodes(s, &rows, &n, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(n, (size_t)N);
    int checked = 0;
    for (int i = 0; i < N; i++) {
        const store_node_row *r = NULL;
        for (size_t k = 0; k < n; k++)
            if (strcmp(rows[k].id, st[i].id) == 0)
                r = &rows[k];
        cr_assert_not_null(r, "%s missing", st[i].id);
        cr_expect_str_eq(r->status, st[i].status ? st[i].status : "online", "%s", st[i].id);
        cr_expect_eq(r->last_seen_ms, st[i].last_seen_ms, "%s", st[i].id);
        checked++;
    }
    cr_expect_eq(checked, N);
    free(rows);
    /* only times, no status at all */
    store_node_state seen[2] = {{.id = "node-0001", .last_seen_ms = 1800000000000LL},
                                {.id = "node-0002", .last_seen_ms = 1800000001000LL}};
    cr_assert_eq(s->ops->write_node_states(s, seen, 2, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(s->ops->load_nodes(s, &rows, &n, err, sizeof(err)), STORE_OK, "%s", err);
    for (size_t k = 0; k < n; k++)
        if (strcmp(rows[k].id, "node-0002") == 0) {
            cr_expect_eq(rows[k].last_seen_ms, 1800000001000LL);
            cr_expect_str_eq(rows[k].status, "recovering", "status left alone");
        }
    free(rows);
    store_close(s);
}

/* Node rows written by something else may hold strings longer than our buffers. */
static void case_long_node_strings(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    if (h->widen_node_sql)
        h->exec(h->widen_node_sql);
    char sql[2048], host[701], name[301];
    memset(host, 'h', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(sql, sizeof(sql),
             "INSERT INTO node (node_id, node_name, host, status) VALUES ('long', '%s', '%s',"
             " 'online-but-much-too-long-status')",
             name, host);
    h->exec(sql);
    store_node_row *rows = NULL;
    size_t n = 0;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->load_nodes(s, &rows, &n, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(n, 1);
    cr_expect_eq(strlen(rows[0].host), KG_HOST_MAX);
    cr_expect_eq(strlen(rows[0].name), KG_NODE_NAME_MAX);
    cr_expect_eq(strlen(rows[0].status), sizeof(rows[0].status) - 1);
    cr_expect_eq(strncmp(rows[0].host, host, KG_HOST_MAX), 0);
    free(rows);
    store_close(s);
}

static void case_load_monitors(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    kg_nametab tab;
    nametab_init(&tab);
    int32_t pre = idx(&tab, "zz-already-known"); /* indexes continue the caller's table */
    store_monitor_set set;
    load_all(s, &tab, &set);
    cr_assert_eq(set.n, 8);
    for (size_t i = 0; i < set.n; i++)
        cr_expect_eq(set.monitors[i].id, (int64_t)i + 1, "ordered by id");
    cr_expect_eq(nametab_find(&tab, "zz-already-known", 16), pre);
    const plan_monitor *m = set.monitors;
    cr_expect_str_eq(nametab_name(&tab, m[0].home), "n1");
    cr_expect_eq(m[0].over, -1);
    cr_expect_eq(m[0].active, 1);
    cr_expect_eq(m[0].ours, 0);
    cr_expect_str_eq(nametab_name(&tab, m[1].home), "n2");
    cr_expect_str_eq(nametab_name(&tab, m[1].over), "n3");
    cr_expect_eq(m[1].ours, 1, "our failover override");
    cr_expect_str_eq(nametab_name(&tab, m[2].over), "n9");
    cr_expect_eq(m[2].ours, 0, "manual pin: no record");
    cr_expect_eq(m[3].home, -1);
    cr_expect_eq(m[3].over, -1);
    cr_expect_eq(m[3].active, 1);
    cr_expect_eq(m[4].ours, 0, "record says n3 but the row says n1: an operator's pin");
    cr_expect_eq(m[5].active, 0);
    cr_expect_eq(m[6].ours, 1);
    cr_expect_eq(m[7].ours, 1);
    cr_expect_eq(m[0].home, m[2].home, "one index per name");
    store_free_monitors(&set);
    cr_expect_null(set.monitors);
    nametab_free(&tab);
    store_close(s);
}

static void case_apply_each_kind(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    int32_t n2 = idx(&tab, "n2"), n3 = idx(&tab, "n3");
    plan_move mv[5] = {
        move_for(find_monitor(&set, 1), MOVE_SET_OVERRIDE, n2, false),
        move_for(find_monitor(&set, 2), MOVE_CLEAR_OVERRIDE, -1, false),
        move_for(find_monitor(&set, 4), MOVE_SET_HOME, n3, false),
        move_for(find_monitor(&set, 7), MOVE_SET_HOME, n3, true),
        move_for(find_monitor(&set, 8), MOVE_SET_HOME, n2, false),
    };
    store_apply_result res = {99, 99};
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, 5, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 5);
    cr_expect_eq(res.skipped, 0);

    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 1", "n2");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 1", "n1");
    expect_str(h, "SELECT node_id FROM kumaguard_override WHERE monitor_id = 1", "n2");
    expect_str(h, "SELECT home_node FROM kumaguard_override WHERE monitor_id = 1", "n1");
    expect_str(h, "SELECT reason FROM kumaguard_override WHERE monitor_id = 1", "failover");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 2", "(null)");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 2", "n2");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 2"),
                 0, "cleared override loses its record");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 4", "n3");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 4", "(null)");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 7", "n3");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 7", "(null)");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 7"),
                 0, "force rebalance clears our override and its record");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 8", "n2");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 8", "n3");
    expect_str(h, "SELECT home_node FROM kumaguard_override WHERE monitor_id = 8", "n2");
    /* untouched rows */
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 3", "n9");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 5", "n1");
    expect_ids_intact(h, 8, 36);

    /* What the next plan sees. */
    store_monitor_set after;
    load_all(s, &tab, &after);
    cr_expect_eq(find_monitor(&after, 1)->ours, 1, "our new failover override");
    cr_expect_eq(find_monitor(&after, 8)->ours, 1, "home change keeps our override ours");
    cr_expect_eq(find_monitor(&after, 3)->ours, 0);
    store_free_monitors(&after);

    /* The same plan again: every guard now fails, nothing changes. */
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, 5, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 0);
    cr_expect_eq(res.skipped, 5);
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 1", "n2");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 8", "n2");

    /* An empty plan is a no-op, and a move with an index outside the table is refused. */
    cr_expect_eq(s->ops->apply_moves(s, &tab, mv, 0, "none", &res, err, sizeof(err)), STORE_OK);
    cr_expect_eq(res.applied + res.skipped, 0);
    plan_move bad = mv[0];
    bad.to = 12345;
    cr_expect_eq(s->ops->apply_moves(s, &tab, &bad, 1, "bad", &res, err, sizeof(err)),
                 STORE_ERROR);
    cr_expect(strstr(err, "invalid move") != NULL, "%s", err);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

/* A Kuma node or an operator changes rows between our plan and its application. */
static void case_guard(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    int32_t n2 = idx(&tab, "n2"), n3 = idx(&tab, "n3");
    plan_move mv[4] = {
        move_for(find_monitor(&set, 1), MOVE_SET_OVERRIDE, n2, false),
        move_for(find_monitor(&set, 4), MOVE_SET_HOME, n3, false),
        move_for(find_monitor(&set, 7), MOVE_SET_OVERRIDE, n2, false),
        move_for(find_monitor(&set, 2), MOVE_CLEAR_OVERRIDE, -1, false),
    };
    mv[2].to = n3; /* m7: our override n2 -> n3 */
    h->exec("UPDATE monitor SET assigned_node = 'n3' WHERE id = 1"); /* operator pins m1 */
    h->exec("UPDATE monitor SET node_id = 'n1' WHERE id = 2");       /* Kuma rehomes m2 */
    store_apply_result res;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, 4, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 2);
    cr_expect_eq(res.skipped, 2);
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 1", "n3");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 1"),
                 0, "a skipped move records nothing");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 2", "n3");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 2", "n1");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 2"),
                 1, "a skipped clear keeps its record");
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 4", "n3");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 7", "n3");
    expect_ids_intact(h, 8, 36);

    store_monitor_set after;
    load_all(s, &tab, &after);
    cr_expect_eq(find_monitor(&after, 1)->ours, 0, "the operator's pin is not ours");
    cr_expect_eq(find_monitor(&after, 7)->ours, 1);
    store_free_monitors(&after);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

/* Issue 12: a monitor switched off between the plan and the apply is never given an
 * override (the guard compares active too), our override on a monitor that is off is cleared,
 * but not once the monitor was switched back on meanwhile; and the store refuses a move that
 * would give an inactive monitor a node. */
static void case_guard_active(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    h->exec("UPDATE monitor SET active = 0 WHERE id IN (7, 8)"); /* paused while failed over */
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    int32_t n2 = idx(&tab, "n2");
    cr_assert_eq(find_monitor(&set, 7)->active, 0);
    plan_move mv[3] = {
        move_for(find_monitor(&set, 1), MOVE_SET_OVERRIDE, n2, false),  /* active when planned */
        move_for(find_monitor(&set, 7), MOVE_CLEAR_OVERRIDE, -1, false),/* off: clean-up */
        move_for(find_monitor(&set, 8), MOVE_CLEAR_OVERRIDE, -1, false),/* off: clean-up */
    };
    cr_assert_eq(mv[1].expect_active, 0);
    h->exec("UPDATE monitor SET active = 0 WHERE id = 1"); /* a user pauses m1 meanwhile */
    h->exec("UPDATE monitor SET active = 1 WHERE id = 8"); /* and resumes m8 */
    store_apply_result res;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, 3, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 1);
    cr_expect_eq(res.skipped, 2);
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 1", "(null)");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 1"), 0,
                 "a monitor switched off meanwhile got an override");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 7", "(null)");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 7"), 0);
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 8", "n3");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 8"), 1,
                 "a monitor switched back on keeps our override and its record");

    /* Giving an inactive monitor a node is refused outright, and changes nothing. */
    plan_move bad = move_for(find_monitor(&set, 6), MOVE_SET_OVERRIDE, n2, false);
    cr_assert_eq(bad.expect_active, 0);
    cr_expect_eq(s->ops->apply_moves(s, &tab, &bad, 1, "failover", &res, err, sizeof(err)),
                 STORE_ERROR);
    cr_expect(strstr(err, "invalid move") != NULL, "%s", err);
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 6", "(null)");
    expect_ids_intact(h, 8, 36);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

/* Moves to 40 targets at once, as a failover over a large cluster plans them: MariaDB splits
 * them into many units with a CASE over up to 16 targets each, several units per round trip.
 * A row changed and a row deleted behind the store's back in the middle make one unit fall
 * back to the exact path; every other move lands, with its record, and nothing else. */
static void case_many_targets(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    insert_monitors(h, 1, 2000, "n1");
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    cr_assert_eq(set.n, 2000);
    int32_t t[40];
    for (int k = 0; k < 40; k++) {
        char name[16];
        snprintf(name, sizeof(name), "t%02d", k);
        t[k] = idx(&tab, name);
    }
    plan_move *mv = calloc(set.n, sizeof(*mv));
    cr_assert_not_null(mv);
    for (size_t i = 0; i < set.n; i++)
        mv[set.n - 1 - i] = move_for(&set.monitors[i], MOVE_SET_OVERRIDE,
                                     t[set.monitors[i].id % 40], false); /* any order */
    h->exec("UPDATE monitor SET assigned_node = 'x' WHERE id = 1000");
    h->exec("DELETE FROM monitor WHERE id = 1500");
    store_apply_result res;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, set.n, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 1998);
    cr_expect_eq(res.skipped, 2);
    store_monitor_set after;
    load_all(s, &tab, &after);
    cr_assert_eq(after.n, 1999);
    for (size_t i = 0; i < after.n; i++) {
        const plan_monitor *m = &after.monitors[i];
        if (m->id == 1000)
            continue;
        cr_assert_eq(m->over, t[m->id % 40], "monitor %lld", (long long)m->id);
        cr_assert(m->ours, "monitor %lld", (long long)m->id);
    }
    store_free_monitors(&after);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override o JOIN monitor m"
                              " ON m.id = o.monitor_id AND m.assigned_node = o.node_id"
                              " WHERE o.home_node = 'n1' AND o.reason = 'failover'"), 1998);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override"), 1998,
                 "records only for the moves applied");
    expect_str(h, "SELECT assigned_node FROM monitor WHERE id = 1000", "x");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM monitor WHERE id = 1500"), 0);
    expect_ids_intact(h, 1999, 2000LL * 2001 / 2 - 1500);
    free(mv);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

static void settle(const store_harness *h)
{
    struct timespec ts = {h->settle_ms / 1000, (long)(h->settle_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool probe_changed(kg_store *s)
{
    bool changed = false;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->monitors_changed(s, &changed, err, sizeof(err)), STORE_OK, "%s", err);
    return changed;
}

/* Issue 15: the monitors are read again only when something changed.  The probe says so for
 * each kind of change a Kuma node, an operator, another controller or we make; and says
 * "unchanged" once the rows were read after the last change. */
static void case_change_probe(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    cr_expect(probe_changed(s), "never read: must read");
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set); /* drops the stale record of m5: a change of our own */
    store_free_monitors(&set);
    settle(h);
    load_all(s, &tab, &set);
    store_free_monitors(&set);
    cr_expect_not(probe_changed(s), "nothing changed since the read");
    cr_expect_not(probe_changed(s), "asking twice changes nothing");

    static const struct {
        const char *what, *sql;
    } edits[] = {
        {"a monitor added",
         "INSERT INTO monitor (id, name, active, node_id) VALUES (9, 'm9', 1, 'n1')"},
        {"a monitor switched off", "UPDATE monitor SET active = 0 WHERE id = 1"},
        {"a monitor re-pinned", "UPDATE monitor SET assigned_node = 'n2' WHERE id = 3"},
        {"a monitor re-homed", "UPDATE monitor SET node_id = 'n3' WHERE id = 4"},
        {"a monitor deleted", "DELETE FROM monitor WHERE id = 9"},
        {"our override record changed by another controller",
         "DELETE FROM kumaguard_override WHERE monitor_id = 2"},
    };
    for (size_t e = 0; e < sizeof(edits) / sizeof(edits[0]); e++) {
        h->exec(edits[e].sql);
        cr_expect(probe_changed(s), "%s: not noticed", edits[e].what);
        settle(h);
        cr_expect(probe_changed(s), "%s: forgotten before the rows were read", edits[e].what);
        load_all(s, &tab, &set);
        store_free_monitors(&set);
        cr_expect_not(probe_changed(s), "%s: read, then nothing changed", edits[e].what);
    }

    /* Our own moves. */
    load_all(s, &tab, &set);
    plan_move mv = move_for(find_monitor(&set, 4), MOVE_SET_HOME, idx(&tab, "n2"), false);
    store_free_monitors(&set);
    store_apply_result res;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->apply_moves(s, &tab, &mv, 1, "rebalance", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 1);
    cr_expect(probe_changed(s), "our own apply_moves not noticed");
    settle(h);
    load_all(s, &tab, &set);
    store_free_monitors(&set);
    cr_expect_not(probe_changed(s));

    nametab_free(&tab);
    store_close(s);
}

static void case_manual_pin(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    h->exec("UPDATE monitor SET assigned_node = 'n2' WHERE id = 1");
    /* m8 carried our override n3; an operator re-pins it to n2: from now on it is a pin. */
    h->exec("UPDATE monitor SET assigned_node = 'n2' WHERE id = 8");
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    const plan_monitor *m1 = find_monitor(&set, 1);
    cr_expect_str_eq(nametab_name(&tab, m1->over), "n2");
    cr_expect_eq(m1->ours, 0);
    cr_expect_eq(find_monitor(&set, 8)->ours, 0);
    cr_expect_eq(find_monitor(&set, 7)->ours, 1);
    store_free_monitors(&set);
    /* Reading writes nothing (a follower reads too): the stale record is still there, only
     * not "ours".  Dropping it is a fenced write of the leader's — refused without a fence
     * generation, done with one. */
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 8"), 1,
                 "load_monitors wrote (it must not: followers read too)");
    char err[ERRLEN] = "";
    size_t forgotten = 99;
    s->fence_generation = 0;
    cr_expect_eq(s->ops->forget_stale_overrides(s, &forgotten, err, sizeof(err)), STORE_FENCED,
                 "a follower dropped records");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 8"), 1);
    bool leader = false;
    int64_t gen = 0;
    cr_assert_eq(s->ops->lease(s, "ctl-a", 10000, &leader, &gen, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_assert(leader);
    s->fence_generation = gen;
    cr_assert_eq(s->ops->forget_stale_overrides(s, &forgotten, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect_eq(forgotten, 2, "m8's record, and m5's (stale since the seed)");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 8"), 0,
                 "a record that no longer matches its monitor must be forgotten");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 5"), 0);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE monitor_id = 7"), 1,
                 "a record that still matches stays");
    s->fence_generation = gen + 1; /* another controller took over meanwhile */
    cr_expect_eq(s->ops->forget_stale_overrides(s, &forgotten, err, sizeof(err)), STORE_FENCED);
    s->fence_generation = gen;
    /* The operator moves the pin back to n3, the value kumaguard once wrote.  It is still the
     * operator's pin: the stale record is gone, so a recovery of n1 can never revert it
     * (invariant 5). */
    h->exec("UPDATE monitor SET assigned_node = 'n3' WHERE id = 8");
    load_all(s, &tab, &set);
    cr_expect_eq(find_monitor(&set, 8)->ours, 0, "a re-pin to our old value became ours");
    cr_expect_eq(find_monitor(&set, 7)->ours, 1);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

static void case_fencing(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    seed_cluster(h);
    char err[ERRLEN] = "";
    bool leader = false;
    int64_t gen = 0;
    cr_assert_eq(s->ops->lease(s, "ctl-a", 10000, &leader, &gen, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_assert(leader);
    cr_assert_gt(gen, 0);
    s->fence_generation = gen;

    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    int32_t n2 = idx(&tab, "n2");
    plan_move ok = move_for(find_monitor(&set, 1), MOVE_SET_OVERRIDE, n2, false);
    plan_move late = move_for(find_monitor(&set, 4), MOVE_SET_HOME, n2, false);
    store_apply_result res;
    cr_assert_eq(s->ops->apply_moves(s, &tab, &ok, 1, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 1);

    /* Another controller took over meanwhile. */
    h->exec("UPDATE kumaguard_leader SET generation = generation + 1 WHERE id = 1");
    err[0] = '\0';
    cr_expect_eq(s->ops->apply_moves(s, &tab, &late, 1, "failover", &res, err, sizeof(err)),
                 STORE_FENCED);
    cr_expect(strstr(err, "fenced") != NULL, "%s", err);
    cr_expect_eq(res.applied, 0);
    expect_str(h, "SELECT node_id FROM monitor WHERE id = 4", "(null)");
    store_node_state st = {.id = "n1", .status = "offline", .last_seen_ms = 0};
    cr_expect_eq(s->ops->write_node_states(s, &st, 1, err, sizeof(err)), STORE_FENCED);
    expect_str(h, "SELECT status FROM node WHERE node_id = 'n1'", "online");
    cr_expect_eq(s->ops->upsert_node(s, "n4", "h4:1", err, sizeof(err)), STORE_FENCED);
    kg_event ev = {.kind = EV_FAILOVER, .count = 1};
    cr_expect_eq(s->ops->append_event(s, &ev, err, sizeof(err)), STORE_FENCED);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM node"), 3);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_event"), 0);

    /* Unfenced (fence_generation 0), the same write goes through. */
    s->fence_generation = 0;
    cr_expect_eq(s->ops->write_node_states(s, &st, 1, err, sizeof(err)), STORE_OK, "%s", err);
    expect_str(h, "SELECT status FROM node WHERE node_id = 'n1'", "offline");
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

static void case_events(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    kg_event ev = {.id = 7, .ts_ms = 1700000000123LL, .kind = EV_FAILOVER, .node = "n1",
                   .from = "n1", .to = "several", .count = 5, .duration_ms = 42,
                   .reason = "n1 offline (3 failed probes)"};
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->append_event(s, &ev, err, sizeof(err)), STORE_OK, "%s", err);
    kg_event now = {.kind = EV_LEADER};
    cr_assert_eq(s->ops->append_event(s, &now, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_event"), 2);
    expect_str(h, "SELECT kind FROM kumaguard_event WHERE count = 5", "failover");
    expect_str(h, "SELECT to_node FROM kumaguard_event WHERE count = 5", "several");
    expect_str(h, "SELECT reason FROM kumaguard_event WHERE count = 5",
               "n1 offline (3 failed probes)");
    cr_expect_eq(h->query_int("SELECT duration_ms FROM kumaguard_event WHERE count = 5"), 42);
    char ts[64];
    h->query_str("SELECT ts FROM kumaguard_event WHERE count = 5", ts, sizeof(ts));
    cr_expect_eq(strncmp(ts, "2023-11-14 22:13:20.123", 23), 0, "UTC ts, got %s", ts);
    expect_str(h, "SELECT kind FROM kumaguard_event WHERE count = 0", "leader");
    expect_str(h, "SELECT node FROM kumaguard_event WHERE count = 0", "(null)");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_event WHERE ts IS NULL"), 0);
    /* retention: everything older than the cut goes, the recent event stays */
    cr_assert_eq(s->ops->prune_events(s, 1700000000124LL, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_event"), 1);
    expect_str(h, "SELECT kind FROM kumaguard_event", "leader");
    store_close(s);
}

/* 5,000 moves (more than one multi-row INSERT on MariaDB) to a node whose name needs
 * escaping, then guarded moves that must find it again. */
static void case_bulk_and_escaping(const store_harness *h)
{
    kg_store *s = open_with_schema(h);
    insert_monitors(h, 1, 5000, "n1");
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(s, &tab, &set);
    cr_assert_eq(set.n, 5000);
    static const char odd[] = "o'brien\\x\"; DROP TABLE monitor; --";
    int32_t weird = idx(&tab, odd);
    plan_move *mv = calloc(set.n, sizeof(*mv));
    cr_assert_not_null(mv);
    for (size_t i = 0; i < set.n; i++)
        mv[i] = move_for(&set.monitors[i], MOVE_SET_HOME, weird, false);
    store_apply_result res;
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, set.n, "rebalance", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 5000);
    store_free_monitors(&set);
    load_all(s, &tab, &set);
    cr_assert_eq(set.n, 5000);
    for (size_t i = 0; i < set.n; i++)
        cr_assert_eq(set.monitors[i].home, weird, "monitor %zu", i);
    int32_t n2 = idx(&tab, "n2");
    for (size_t i = 0; i < set.n; i++)
        mv[i] = move_for(&set.monitors[i], MOVE_SET_OVERRIDE, n2, false);
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, set.n, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    cr_expect_eq(res.applied, 5000, "guards compare the escaped name correctly");
    cr_expect_eq(h->query_int("SELECT COUNT(*) FROM kumaguard_override WHERE node_id = 'n2'"),
                 5000);
    expect_ids_intact(h, 5000, 5000LL * 5001 / 2);
    free(mv);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

#endif
