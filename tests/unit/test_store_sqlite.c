/* test_store_sqlite.c — the embedded store (store_sqlite.c), store_open's backend choice and
 * the name table (nametab.c).  The cases shared with MariaDB live in store_cases.h; each test
 * here gets a fresh database file in its own temporary directory. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "nametab.h"
#include "store.h"
#include "store_cases.h"
#include "store_monitor_cases.h"

static char g_dir[256];
static char g_path[300];
static sqlite3 *g_raw; /* the side connection: "a Kuma node" / "an operator" */

static void setup(void)
{
    snprintf(g_dir, sizeof(g_dir), "%s/kg-store-sqlite.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof(g_path), "%s/cluster.db", g_dir);
    cr_assert_eq(sqlite3_open(g_path, &g_raw), SQLITE_OK);
    sqlite3_busy_timeout(g_raw, 5000);
}

static void teardown(void)
{
    sqlite3_close(g_raw);
    g_raw = NULL;
    char path[400];
    static const char *const files[] = {"cluster.db", "cluster.db-wal", "cluster.db-shm"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", g_dir, files[i]);
        unlink(path);
    }
    rmdir(g_dir);
}

static kg_store *h_open(void)
{
    char err[ERRLEN] = "";
    kg_store *s = store_sqlite_open(g_path, err, sizeof(err));
    cr_assert_not_null(s, "%s", err);
    return s;
}

static void h_exec(const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(g_raw, sql, NULL, NULL, &msg);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, msg ? msg : "");
}

static long long h_query_int(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(g_raw, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(g_raw));
    long long v = -1;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void h_query_str(const char *sql, char *buf, size_t len)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(g_raw, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(g_raw));
    snprintf(buf, len, "(null)");
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

static const store_harness H = {
    .open = h_open,
    .exec = h_exec,
    .query_int = h_query_int,
    .query_str = h_query_str,
    .widen_node_sql = NULL, /* SQLite does not enforce VARCHAR lengths */
    .settle_ms = 0,         /* PRAGMA data_version is exact */
};

TestSuite(sqlite, .init = setup, .fini = teardown);

Test(sqlite, schema_is_idempotent) { case_schema_idempotent(&H); }
Test(sqlite, nodes_upsert_load_and_state_writes) { case_nodes(&H); }
Test(sqlite, node_states_of_many_nodes_in_one_call) { case_node_states_many(&H); }
Test(sqlite, long_node_strings_are_truncated_safely) { case_long_node_strings(&H); }
Test(sqlite, load_monitors_indexes_and_ours_flags) { case_load_monitors(&H); }
Test(sqlite, apply_moves_of_each_kind) { case_apply_each_kind(&H); }
Test(sqlite, guard_skips_rows_changed_since_the_plan) { case_guard(&H); }
Test(sqlite, guard_skips_monitors_switched_on_or_off) { case_guard_active(&H); }
Test(sqlite, moves_to_many_targets_in_one_apply) { case_many_targets(&H); }
Test(sqlite, change_probe_notices_every_change, .timeout = 60) { case_change_probe(&H); }
Test(sqlite, manual_pin_is_never_ours) { case_manual_pin(&H); }
Test(sqlite, fencing_blocks_every_write) { case_fencing(&H); }
Test(sqlite, events_are_stored_in_utc) { case_events(&H); }
Test(sqlite, bulk_moves_and_escaping) { case_bulk_and_escaping(&H); }
Test(sqlite, monitor_query_filters_and_paging) { case_query_monitors(&H); }
Test(sqlite, monitor_changes_are_guarded_all_or_nothing_and_fenced) { case_monitor_changes(&H); }
Test(sqlite, setup_status_follows_the_user_table) { case_setup_status(&H); }

Test(sqlite, lease_is_always_ours_with_generation_1)
{
    kg_store *s = open_with_schema(&H);
    char err[ERRLEN] = "";
    for (int i = 0; i < 2; i++) {
        bool leader = false;
        int64_t gen = 0;
        cr_assert_eq(s->ops->lease(s, "ctl", 5000, &leader, &gen, err, sizeof(err)), STORE_OK,
                     "%s", err);
        cr_expect(leader);
        cr_expect_eq(gen, 1);
    }
    char holder[64];
    h_query_str("SELECT holder FROM kumaguard_leader WHERE id = 1", holder, sizeof(holder));
    cr_expect_str_eq(holder, "ctl");
    store_close(s);
}

Test(sqlite, unopenable_path_is_an_error_not_a_crash)
{
    char err[ERRLEN] = "";
    kg_store *s = store_sqlite_open("/nonexistent-dir/sub/cluster.db", err, sizeof(err));
    cr_expect_null(s);
    cr_expect(strstr(err, "/nonexistent-dir/sub/cluster.db") != NULL, "%s", err);
}

Test(sqlite, store_open_picks_backend_from_db_host)
{
    kg_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.sqlite_path = g_path;
    char err[ERRLEN] = "";
    kg_store *s = store_open(&cfg, err, sizeof(err));
    cr_assert_not_null(s, "%s", err);
    cr_expect_str_eq(s->ops->backend, "sqlite");
    store_close(s);

    /* MariaDB connects lazily: opening touches no network, the first operation reports. */
    char host[] = "127.0.0.1";
    char password[] = "s3cret-never-shown";
    cfg.db_host = host;
    cfg.db_port = 1; /* nothing listens there */
    cfg.db_password = password;
    cfg.db_timeout_ms = 1000;
    s = store_open(&cfg, err, sizeof(err));
    cr_assert_not_null(s, "%s", err);
    cr_expect_str_eq(s->ops->backend, "mariadb");
    cr_expect_eq(s->ops->ping(s, err, sizeof(err)), STORE_ERROR);
    cr_expect(strstr(err, "127.0.0.1:1") != NULL, "%s", err);
    cr_expect(strstr(err, password) == NULL, "password leaked: %s", err);
    store_close(s);

    cfg.db_host = NULL;
    cfg.sqlite_path = NULL;
    cr_expect_null(store_open(&cfg, err, sizeof(err)));
}

/* ---- nametab ------------------------------------------------------------------------------ */

Test(nametab, interns_finds_and_keeps_indexes_stable)
{
    kg_nametab t;
    nametab_init(&t);
    cr_expect_eq(nametab_find(&t, "a", 1), -1);
    cr_expect_eq(nametab_intern(&t, "node1", 5), 0);
    cr_expect_eq(nametab_intern(&t, "node2", 5), 1);
    cr_expect_eq(nametab_intern(&t, "node1xyz", 5), 0, "length bounds the name");
    cr_expect_eq(nametab_intern(&t, "node1", 100), 0, "a NUL ends the name");
    cr_expect_eq(nametab_find(&t, "node2", 5), 1);
    cr_expect_eq(nametab_find(&t, "node", 4), -1);
    cr_expect_eq(nametab_intern(&t, "", 0), 2, "the empty string is a name, not NULL");
    cr_expect_eq(nametab_intern(&t, NULL, 0), -1);
    cr_expect_str_eq(nametab_name(&t, 1), "node2");
    cr_expect_null(nametab_name(&t, 3));
    cr_expect_null(nametab_name(&t, -1));

    /* Growth (rehashing several times) keeps every earlier index. */
    char name[32];
    for (int i = 0; i < 20000; i++) {
        int len = snprintf(name, sizeof(name), "n-%d", i);
        cr_assert_eq(nametab_intern(&t, name, (size_t)len), i + 3);
    }
    for (int i = 0; i < 20000; i += 997) {
        int len = snprintf(name, sizeof(name), "n-%d", i);
        cr_assert_eq(nametab_find(&t, name, (size_t)len), i + 3);
        cr_assert_str_eq(nametab_name(&t, i + 3), name);
    }
    cr_expect_eq(nametab_find(&t, "node1", 5), 0);
    cr_expect_eq(t.n, 20003);
    nametab_free(&t);
    cr_expect_eq(t.n, 0);
    cr_expect_eq(nametab_find(&t, "node1", 5), -1, "usable (empty) after free");
    nametab_free(&t);
}
