/* test_store_mariadb.c — store_mariadb.c against a real, throwaway MariaDB server.
 *
 * The runner process starts the server once (scripts/mariadb-test-server.sh, found through
 * KG_SOURCE_DIR, which ctest sets) on a free loopback port in a mkdtemp directory, and stops
 * and removes it after the last test.  If the server cannot start, every test fails — they
 * never skip.  Tests run one at a time (one database; one test restarts the server), and
 * each starts from an empty `kuma` database.  The side connection (root over the socket)
 * plays "a Kuma node" / "an operator". */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <errno.h>
#include <libgen.h>
#include <mysql.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "nametab.h"
#include "store.h"
#include "mariadb_server.h"
#include "store_cases.h"
#include "lease_cases.h"
#include "store_monitor_cases.h"

/* ---- the throwaway server (runner process) --------------------------------------------- */

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    mdb_start("KG_TEST_MDB", "kg-store-mariadb", 20000);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    mdb_stop("KG_TEST_MDB");
}

/* ---- per test (worker process) ------------------------------------------------------------ */

static char g_sock[300];
static MYSQL *g_raw;

static MYSQL *raw_connect(void)
{
    MYSQL *db = mysql_init(NULL);
    cr_assert_not_null(db);
    if (!mysql_real_connect(db, NULL, "root", NULL, "kuma", 0, g_sock, 0))
        cr_assert_fail("side connection: %s", mysql_error(db));
    cr_assert_eq(mysql_query(db, "SET time_zone = '+00:00'"), 0);
    return db;
}

static void setup(void)
{
    const char *e = getenv("KG_TEST_MDB_ERROR");
    cr_assert_null(e, "MariaDB test server not available: %s", e);
    cr_assert_not_null(getenv("KG_TEST_MDB_DIR"), "PRE_ALL hook did not run");
    snprintf(g_sock, sizeof(g_sock), "%s/sock", getenv("KG_TEST_MDB_DIR"));
    g_raw = raw_connect();
    cr_assert_eq(mysql_query(g_raw, "DROP TABLE IF EXISTS node, monitor, kumaguard_override,"
                                    " kumaguard_event, kumaguard_leader"),
                 0, "%s", mysql_error(g_raw));
}

static void teardown(void)
{
    if (g_raw)
        mysql_close(g_raw);
    g_raw = NULL;
}

static void make_config(kg_config *cfg, char *password)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->db_host = g_sock;
    cfg->db_user = "kuma";
    cfg->db_password = password;
    cfg->db_name = "kuma";
    cfg->db_timeout_ms = 5000; /* the product default */
}

static kg_store *h_open(void)
{
    kg_config cfg;
    make_config(&cfg, "kumapw");
    char err[ERRLEN] = "";
    kg_store *s = store_open(&cfg, err, sizeof(err));
    cr_assert_not_null(s, "%s", err);
    cr_assert_str_eq(s->ops->backend, "mariadb");
    return s;
}

static void h_exec(const char *sql)
{
    cr_assert_eq(mysql_query(g_raw, sql), 0, "%.200s: %s", sql, mysql_error(g_raw));
}

static MYSQL_ROW raw_first_row(const char *sql, MYSQL_RES **res)
{
    cr_assert_eq(mysql_query(g_raw, sql), 0, "%s: %s", sql, mysql_error(g_raw));
    *res = mysql_store_result(g_raw);
    cr_assert_not_null(*res, "%s: %s", sql, mysql_error(g_raw));
    return mysql_fetch_row(*res);
}

static long long h_query_int(const char *sql)
{
    MYSQL_RES *res;
    MYSQL_ROW row = raw_first_row(sql, &res);
    long long v = (row && row[0]) ? strtoll(row[0], NULL, 10) : -1;
    mysql_free_result(res);
    return v;
}

static void h_query_str(const char *sql, char *buf, size_t len)
{
    MYSQL_RES *res;
    MYSQL_ROW row = raw_first_row(sql, &res);
    snprintf(buf, len, "%s", (row && row[0]) ? row[0] : "(null)");
    mysql_free_result(res);
}

static const store_harness H = {
    .open = h_open,
    .exec = h_exec,
    .query_int = h_query_int,
    .query_str = h_query_str,
    .widen_node_sql = "ALTER TABLE node MODIFY host VARCHAR(1000),"
                      " MODIFY node_name VARCHAR(1000), MODIFY status VARCHAR(100)",
    .settle_ms = 3100, /* store_mariadb.c PROBE_SETTLE_S, in whole seconds of server time */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

TestSuite(mariadb, .init = setup, .fini = teardown);

Test(mariadb, schema_is_idempotent) { case_schema_idempotent(&H); }
Test(mariadb, nodes_upsert_load_and_state_writes) { case_nodes(&H); }
Test(mariadb, node_states_of_many_nodes_in_one_call) { case_node_states_many(&H); }
Test(mariadb, long_node_strings_are_truncated_safely) { case_long_node_strings(&H); }
Test(mariadb, load_monitors_indexes_and_ours_flags) { case_load_monitors(&H); }
Test(mariadb, apply_moves_of_each_kind) { case_apply_each_kind(&H); }
Test(mariadb, guard_skips_rows_changed_since_the_plan) { case_guard(&H); }
Test(mariadb, guard_skips_monitors_switched_on_or_off) { case_guard_active(&H); }
Test(mariadb, moves_to_many_targets_in_one_apply) { case_many_targets(&H); }
Test(mariadb, change_probe_notices_every_change, .timeout = 60) { case_change_probe(&H); }
Test(mariadb, manual_pin_is_never_ours) { case_manual_pin(&H); }
Test(mariadb, fencing_blocks_every_write) { case_fencing(&H); }
Test(mariadb, events_are_stored_in_utc) { case_events(&H); }
Test(mariadb, bulk_moves_and_escaping) { case_bulk_and_escaping(&H); }
Test(mariadb, monitor_query_filters_and_paging) { case_query_monitors(&H); }
Test(mariadb, monitor_changes_are_guarded_all_or_nothing_and_fenced) { case_monitor_changes(&H); }
Test(mariadb, setup_status_follows_the_user_table) { case_setup_status(&H); }

Test(mariadb, schema_missing_without_init_then_created_with_it)
{
    kg_store *s = h_open();
    char err[ERRLEN] = "";
    cr_expect_eq(s->ops->ensure_schema(s, false, err, sizeof(err)), STORE_SCHEMA_MISSING);
    cr_expect(strstr(err, "init-schema") != NULL, "%s", err);
    cr_expect_eq(h_query_int("SELECT COUNT(*) FROM kumaguard_override"), 0,
                 "our own tables exist even while waiting");
    cr_expect_eq(h_query_int("SELECT COUNT(*) FROM information_schema.tables WHERE"
                             " table_schema = 'kuma' AND table_name IN ('node', 'monitor')"),
                 0, "node/monitor are not ours to create without init_schema");
    /* The Kuma nodes' migration has created node but not yet monitor. */
    h_exec("CREATE TABLE node (node_id VARCHAR(50) PRIMARY KEY, node_name VARCHAR(100) NOT NULL,"
           " host VARCHAR(45), status VARCHAR(20) DEFAULT 'online', active BOOLEAN DEFAULT 1,"
           " is_primary BOOLEAN DEFAULT 0, created_date TIMESTAMP NULL,"
           " modified_date TIMESTAMP NULL, last_seen TIMESTAMP NULL)");
    cr_expect_eq(s->ops->ensure_schema(s, false, err, sizeof(err)), STORE_SCHEMA_MISSING);
    cr_expect_eq(s->ops->ensure_schema(s, true, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(s->ops->ensure_schema(s, false, err, sizeof(err)), STORE_OK, "%s", err);
    char def[4096];
    h_query_str("SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = 'kuma'"
                " AND table_name = 'monitor' AND column_name IN ('node_id', 'assigned_node')",
                def, sizeof(def));
    cr_expect_str_eq(def, "2", "monitor has indexes on node_id and assigned_node");
    store_close(s);
}

Test(mariadb, sessions_write_utc)
{
    kg_store *s = open_with_schema(&H);
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->upsert_node(s, "n1", "h1:1", err, sizeof(err)), STORE_OK, "%s", err);
    /* modified_date = UTC_TIMESTAMP(): within a minute of UTC now, as seen in UTC. */
    long long skew = h_query_int("SELECT ABS(TIMESTAMPDIFF(SECOND, modified_date,"
                                 " UTC_TIMESTAMP())) FROM node WHERE node_id = 'n1'");
    cr_expect_lt(skew, 60, "modified_date is %lld s away from UTC now", skew);
    store_close(s);
}

Test(mariadb, lease_goes_to_a_second_controller_with_a_new_generation)
{
    kg_store *a = open_with_schema(&H);
    kg_store *b = h_open();
    char err[ERRLEN] = "";
    bool leader;
    int64_t g1 = 0, g;
    cr_assert_eq(a->ops->lease(a, "ctl-a", 30000, &leader, &g1, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect(leader);
    cr_expect_geq(g1, 1);
    cr_assert_eq(b->ops->lease(b, "ctl-b", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect_not(leader, "only one controller leads");
    cr_expect_eq(g, g1, "a follower sees the leader's generation");
    cr_assert_eq(a->ops->lease(a, "ctl-a", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect(leader);
    cr_expect_eq(g, g1, "renewal keeps the generation");
    char holder[64];
    h_query_str("SELECT holder FROM kumaguard_leader WHERE id = 1", holder, sizeof(holder));
    cr_expect_str_eq(holder, "ctl-a");

    /* a clean shutdown releases the lease (a crash leaves it to expire: see below) */
    cr_assert_eq(a->ops->release_lease(a, err, sizeof(err)), STORE_OK, "%s", err);
    store_close(a);
    cr_assert_eq(b->ops->lease(b, "ctl-b", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect(leader);
    cr_expect_eq(g, g1 + 1);
    h_query_str("SELECT holder FROM kumaguard_leader WHERE id = 1", holder, sizeof(holder));
    cr_expect_str_eq(holder, "ctl-b");

    /* A fenced write from the old generation is refused. */
    b->fence_generation = g1;
    kg_event ev = {.kind = EV_LEADER};
    cr_expect_eq(b->ops->append_event(b, &ev, err, sizeof(err)), STORE_FENCED);
    b->fence_generation = g;
    cr_expect_eq(b->ops->append_event(b, &ev, err, sizeof(err)), STORE_OK, "%s", err);
    store_close(b);
}

/* A controller that hangs (keeps its TCP session, says nothing) loses the lease after its
 * TTL: the lease expires by the database's clock, whatever the session does. */
Test(mariadb, silent_leader_loses_lease_after_ttl)
{
    kg_store *a = open_with_schema(&H);
    kg_store *b = h_open();
    char err[ERRLEN] = "";
    bool leader;
    int64_t g1 = 0, g = 0;
    cr_assert_eq(a->ops->lease(a, "ctl-a", 1000, &leader, &g1, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_assert(leader);
    bool taken = false;
    for (int i = 0; i < 40 && !taken; i++) { /* at most 4 s */
        usleep(100 * 1000);
        cr_assert_eq(b->ops->lease(b, "ctl-b", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                     "%s", err);
        taken = leader;
    }
    cr_expect(taken, "the lease never moved");
    cr_expect_eq(g, g1 + 1);
    /* The old leader notices: its next lease call reconnects and finds b leading. */
    cr_assert_eq(a->ops->lease(a, "ctl-a", 1000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect_not(leader);
    cr_expect_eq(g, g1 + 1);
    store_close(a);
    store_close(b);
}

static long long store_connection_id(void)
{
    return h_query_int("SELECT id FROM information_schema.processlist WHERE user = 'kuma'"
                       " ORDER BY id DESC LIMIT 1");
}

Test(mariadb, killed_connection_reconnects_and_keeps_the_lease)
{
    kg_store *s = open_with_schema(&H);
    char err[ERRLEN] = "";
    bool leader;
    int64_t g1 = 0, g = 0;
    cr_assert_eq(s->ops->lease(s, "ctl", 30000, &leader, &g1, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_assert(leader);
    long long id = store_connection_id();
    cr_assert_gt(id, 0);
    char sql[64];
    snprintf(sql, sizeof(sql), "KILL %lld", id);
    h_exec(sql);
    /* A read on the dead connection is retried once on a fresh one: the caller sees nothing. */
    store_node_row *rows = NULL;
    size_t n = 0;
    cr_expect_eq(s->ops->load_nodes(s, &rows, &n, err, sizeof(err)), STORE_OK, "%s", err);
    free(rows);
    /* The lease is a row, not the session: renewed with the same generation (no churn). */
    cr_assert_eq(s->ops->lease(s, "ctl", 30000, &leader, &g, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_expect(leader);
    cr_expect_eq(g, g1);
    store_close(s);
}

/* The change probe is a light touch: it reads no table row (status Rows_read; a full read of
 * 5,000 monitors reads at least 5,000), and a new session (the server may have restarted and
 * lost InnoDB's in-memory update times) always means "read again". */
Test(mariadb, change_probe_reads_no_rows_and_starts_over_on_a_new_session, .timeout = 60)
{
    kg_store *s = open_with_schema(&H);
    insert_monitors(&H, 1, 5000, "n1");
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    settle(&H);
    long long before = h_query_int("SELECT variable_value FROM information_schema.global_status"
                                   " WHERE variable_name = 'ROWS_READ'");
    load_all(s, &tab, &set);
    store_free_monitors(&set);
    long long after_read = h_query_int("SELECT variable_value FROM"
                                       " information_schema.global_status WHERE variable_name ="
                                       " 'ROWS_READ'");
    for (int i = 0; i < 10; i++)
        cr_expect_not(probe_changed(s), "probe %d", i);
    long long after_probes = h_query_int("SELECT variable_value FROM"
                                         " information_schema.global_status WHERE"
                                         " variable_name = 'ROWS_READ'");
    cr_expect_geq(after_read - before, 5000, "a full read reads every monitor");
    cr_expect_lt(after_probes - after_read, 10, "10 probes read %lld rows",
                 after_probes - after_read);

    char sql[64];
    snprintf(sql, sizeof(sql), "KILL %lld", store_connection_id());
    h_exec(sql);
    cr_expect(probe_changed(s), "a new session must read again");
    load_all(s, &tab, &set);
    store_free_monitors(&set);
    cr_expect_not(probe_changed(s), "read on the new session, nothing changed since");
    nametab_free(&tab);
    store_close(s);
}

Test(mariadb, server_stopped_midway_gives_errors_then_recovers)
{
    kg_store *s = open_with_schema(&H);
    seed_cluster(&H);
    char err[ERRLEN] = "";
    bool leader;
    int64_t g1 = 0, g = 0;
    cr_assert_eq(s->ops->lease(s, "ctl", 30000, &leader, &g1, err, sizeof(err)), STORE_OK,
                 "%s", err);
    mysql_close(g_raw);
    g_raw = NULL;
    const char *dir = getenv("KG_TEST_MDB_DIR");
    int port = atoi(getenv("KG_TEST_MDB_PORT"));
    cr_assert_eq(mdb_server_cmd("stop", dir, 0), 0);

    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set = {0};
    cr_expect_eq(s->ops->load_monitors(s, &tab, &set, err, sizeof(err)), STORE_ERROR);
    cr_expect(strncmp(err, "mariadb:", 8) == 0, "%s", err);
    cr_expect_null(set.monitors);
    store_node_state st = {.id = "n1", .status = "offline"};
    cr_expect_eq(s->ops->write_node_states(s, &st, 1, err, sizeof(err)), STORE_ERROR);
    cr_expect_eq(s->ops->lease(s, "ctl", 30000, &leader, &g, err, sizeof(err)), STORE_ERROR);
    cr_expect_not(leader);
    cr_expect_eq(s->ops->ping(s, err, sizeof(err)), STORE_ERROR);
    cr_expect(strstr(err, "kumapw") == NULL, "password leaked: %s", err);

    cr_assert_eq(mdb_server_cmd("start", dir, port), 0, "restart failed");
    g_raw = raw_connect();
    cr_expect_eq(s->ops->load_monitors(s, &tab, &set, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(set.n, 8, "data survived the restart");
    cr_expect_eq(s->ops->write_node_states(s, &st, 1, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(s->ops->lease(s, "ctl", 30000, &leader, &g, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_expect(leader);
    cr_expect_eq(g, g1, "a restart shorter than the TTL keeps the lease and its generation");
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

/* ---- the lease with two controllers (lease_cases.h): both on this one server ------------- */

static kg_store *h_open_schema(void)
{
    return open_with_schema(&H);
}

static const lease_harness LH = {
    .open_a = h_open_schema,
    .open_b = h_open_schema,
    .exec = h_exec,
    .query_int = h_query_int,
};

Test(mariadb, lease_race_has_one_winner) { case_lease_race(&LH, 30); }
Test(mariadb, lease_settled_has_no_churn) { case_lease_steady(&LH, 1500); }
Test(mariadb, lease_release_and_crash) { case_lease_release(&LH); }

/* Every fenced write writes the lease row (that is what Galera certifies); a follower's lease
 * call writes nothing. */
Test(mariadb, fence_writes_the_lease_row)
{
    kg_store *a = open_with_schema(&H);
    kg_store *b = h_open();
    char err[ERRLEN] = "";
    bool leader;
    int64_t g = 0, gb = 0;
    cr_assert_eq(a->ops->lease(a, "ctl-a", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    a->fence_generation = g;
    long long seq = h_query_int("SELECT fence_seq FROM kumaguard_leader");
    kg_event ev = {.kind = EV_LEADER};
    cr_assert_eq(a->ops->append_event(a, &ev, err, sizeof(err)), STORE_OK, "%s", err);
    cr_expect_eq(h_query_int("SELECT fence_seq FROM kumaguard_leader"), seq + 1);
    char before[64], after[64];
    h_query_str("SELECT CONCAT(holder, expires_at, renewed_at) FROM kumaguard_leader", before,
                sizeof(before));
    cr_assert_eq(b->ops->lease(b, "ctl-b", 30000, &leader, &gb, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect_not(leader);
    h_query_str("SELECT CONCAT(holder, expires_at, renewed_at) FROM kumaguard_leader", after,
                sizeof(after));
    cr_expect_str_eq(after, before, "a follower wrote the lease row");
    store_close(a);
    store_close(b);
}

/* kumaguard_leader from a version that leased with GET_LOCK: the columns are added, the old
 * generation goes on. */
Test(mariadb, lease_table_of_an_older_version_is_upgraded)
{
    h_exec("CREATE TABLE kumaguard_leader (id INT NOT NULL PRIMARY KEY, holder VARCHAR(128),"
           " generation BIGINT NOT NULL DEFAULT 0, renewed_at DATETIME(3)) ENGINE=InnoDB");
    h_exec("INSERT INTO kumaguard_leader VALUES (1, 'old', 41, UTC_TIMESTAMP(3))");
    kg_store *s = open_with_schema(&H);
    cr_expect_eq(h_query_int("SELECT COUNT(*) FROM information_schema.columns WHERE"
                             " table_schema = 'kuma' AND table_name = 'kumaguard_leader'"),
                 6);
    char err[ERRLEN] = "";
    bool leader;
    int64_t g = 0;
    cr_assert_eq(s->ops->lease(s, "ctl", 30000, &leader, &g, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_expect(leader);
    cr_expect_eq(g, 42);
    store_close(s);
}

Test(mariadb, wrong_password_is_a_clear_error_without_the_password)
{
    kg_config cfg;
    make_config(&cfg, "not-the-kumapw-secret");
    char err[ERRLEN] = "";
    kg_store *s = store_open(&cfg, err, sizeof(err));
    cr_assert_not_null(s);
    cr_expect_eq(s->ops->ensure_schema(s, true, err, sizeof(err)), STORE_ERROR);
    cr_expect(strstr(err, "Access denied") != NULL, "%s", err);
    cr_expect(strstr(err, "not-the-kumapw-secret") == NULL, "password leaked: %s", err);
    store_close(s);
}

/* Not an assertion on speed (a shared 2-core machine): prints the figures. */
Test(mariadb, hundred_thousand_moves_timing)
{
    kg_store *s = open_with_schema(&H);
    double t0 = now_ms();
    insert_monitors(&H, 1, 100000, "n1");
    double t_fill = now_ms() - t0;
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    t0 = now_ms();
    load_all(s, &tab, &set);
    double t_load = now_ms() - t0;
    cr_assert_eq(set.n, 100000);
    int32_t targets[9];
    for (int i = 0; i < 9; i++) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", i + 2);
        targets[i] = idx(&tab, name);
    }
    plan_move *mv = calloc(set.n, sizeof(*mv));
    cr_assert_not_null(mv);
    for (size_t i = 0; i < set.n; i++)
        mv[i] = move_for(&set.monitors[i], MOVE_SET_OVERRIDE, targets[i % 9], false);
    store_apply_result res;
    char err[ERRLEN] = "";
    t0 = now_ms();
    cr_assert_eq(s->ops->apply_moves(s, &tab, mv, set.n, "failover", &res, err, sizeof(err)),
                 STORE_OK, "%s", err);
    double t_apply = now_ms() - t0;
    cr_expect_eq(res.applied, 100000);
    cr_expect_eq(h_query_int("SELECT COUNT(*) FROM monitor WHERE assigned_node IS NULL"), 0);
    cr_expect_eq(h_query_int("SELECT COUNT(*) FROM kumaguard_override"), 100000);
    fprintf(stderr,
            "mariadb store timing: fill 100000 monitors %.0f ms, load_monitors %.0f ms,"
            " apply_moves (100000 SET_OVERRIDE, one transaction) %.0f ms\n",
            t_fill, t_load, t_apply);
    free(mv);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(s);
}

/* One database and a test that restarts the server: never run tests in parallel. */
int main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    criterion_options.jobs = 1;
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return result;
}
