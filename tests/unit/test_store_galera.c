/* test_store_galera.c — the leader lease and the fence of store_mariadb.c on a real 3-node
 * MariaDB Galera cluster, with the two controllers' stores on different nodes.
 *
 * The runner process starts the cluster once (scripts/galera-test-cluster.sh, in a mkdtemp
 * directory under /tmp; about 15 s) and stops and removes it after the last test.  When the
 * script says Galera cannot run on this machine (exit 2: no galera-4 provider, a server
 * without wsrep), every test is skipped with its reason; any other failure to start fails
 * them.  Each test works in a database of its own.
 *
 * "Replication stalled" is made real, not simulated: a session on a node with wsrep_on=OFF
 * holds a row lock that a replicated write needs; the node's applier waits behind it (Galera
 * does not abort a non-replicated session's locks), so every later write of the cluster is
 * certified but not yet applied there — that node reads a stale lease until the lock goes. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <mysql.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "nametab.h"
#include "store.h"
#include "store_cases.h"
#include "lease_cases.h"

/* ---- the cluster (runner process) --------------------------------------------------------- */

static void galera_script(char *buf, size_t len)
{
    const char *src = getenv("KG_SOURCE_DIR");
    snprintf(buf, len, "%s/scripts/galera-test-cluster.sh", src && src[0] ? src : ".");
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    char dir[] = "/tmp/kg-galera.XXXXXX", script[600], cmd[1400], log[600];
    if (!mkdtemp(dir)) {
        setenv("KG_TEST_GALERA_ERROR", "mkdtemp failed", 1);
        return;
    }
    setenv("KG_TEST_GALERA_DIR", dir, 1);
    galera_script(script, sizeof(script));
    snprintf(log, sizeof(log), "%s/start.log", dir);
    snprintf(cmd, sizeof(cmd), "'%s' start '%s' 2>'%s'", script, dir, log);
    int rc = system(cmd);
    if (rc == 0)
        return;
    char why[600] = "";
    FILE *f = fopen(log, "r");
    if (f) {
        size_t n = fread(why, 1, sizeof(why) - 1, f);
        why[n] = '\0';
        fclose(f);
    }
    fprintf(stderr, "%s", why);
    bool cannot = WIFEXITED(rc) && WEXITSTATUS(rc) == 2;
    setenv(cannot ? "KG_TEST_GALERA_SKIP" : "KG_TEST_GALERA_ERROR",
           why[0] ? why : "galera-test-cluster.sh start failed", 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    const char *dir = getenv("KG_TEST_GALERA_DIR");
    if (!dir)
        return;
    char script[600], cmd[1400];
    galera_script(script, sizeof(script));
    snprintf(cmd, sizeof(cmd), "'%s' stop '%s'; rm -rf '%s'", script, dir, dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not stop/remove the Galera test cluster in %s\n", dir);
}

/* ---- per test (worker process) ------------------------------------------------------------ */

static char g_db[64];
static MYSQL *g_raw[4]; /* root on node 1..3, in the test database */

static void node_sock(int k, char *buf, size_t len)
{
    snprintf(buf, len, "%s/node%d/sock", getenv("KG_TEST_GALERA_DIR"), k);
}

static MYSQL *raw_connect(int k, const char *db)
{
    char sock[300];
    node_sock(k, sock, sizeof(sock));
    MYSQL *m = mysql_init(NULL);
    cr_assert_not_null(m);
    unsigned int t = 20;
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &t);
    if (!mysql_real_connect(m, NULL, "root", NULL, db, 0, sock, 0))
        cr_assert_fail("node%d: %s", k, mysql_error(m));
    cr_assert_eq(mysql_query(m, "SET time_zone = '+00:00'"), 0);
    return m;
}

static void raw_exec(int k, const char *sql)
{
    cr_assert_eq(mysql_query(g_raw[k], sql), 0, "node%d: %.200s: %s", k, sql,
                 mysql_error(g_raw[k]));
}

static long long raw_int(int k, const char *sql)
{
    cr_assert_eq(mysql_query(g_raw[k], sql), 0, "node%d: %s: %s", k, sql, mysql_error(g_raw[k]));
    MYSQL_RES *res = mysql_store_result(g_raw[k]);
    cr_assert_not_null(res);
    MYSQL_ROW row = mysql_fetch_row(res);
    long long v = (row && row[0]) ? strtoll(row[0], NULL, 10) : -1;
    mysql_free_result(res);
    return v;
}

static void raw_str(int k, const char *sql, char *buf, size_t len)
{
    cr_assert_eq(mysql_query(g_raw[k], sql), 0, "node%d: %s: %s", k, sql, mysql_error(g_raw[k]));
    MYSQL_RES *res = mysql_store_result(g_raw[k]);
    cr_assert_not_null(res);
    MYSQL_ROW row = mysql_fetch_row(res);
    snprintf(buf, len, "%s", (row && row[0]) ? row[0] : "(null)");
    mysql_free_result(res);
}

static void setup(void)
{
    const char *skip = getenv("KG_TEST_GALERA_SKIP");
    if (skip)
        cr_skip_test("Galera cannot run on this machine, so the Galera lease tests are skipped:"
                     " %s", skip);
    const char *e = getenv("KG_TEST_GALERA_ERROR");
    cr_assert_null(e, "the Galera test cluster did not start: %s", e);
    snprintf(g_db, sizeof(g_db), "kg_galera_%d", (int)getpid());
    MYSQL *m = raw_connect(1, NULL);
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", g_db);
    cr_assert_eq(mysql_query(m, sql), 0, "%s", mysql_error(m));
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", g_db);
    cr_assert_eq(mysql_query(m, sql), 0, "%s", mysql_error(m));
    mysql_close(m);
    for (int k = 1; k <= 3; k++) {
        /* the DDL is replicated in total order, but another node may not have applied it
         * yet: a causal read waits until it has */
        MYSQL *n = raw_connect(k, NULL);
        cr_assert_eq(mysql_query(n, "SET STATEMENT wsrep_sync_wait = 1 FOR SELECT 1"), 0, "%s",
                     mysql_error(n));
        mysql_free_result(mysql_store_result(n));
        mysql_close(n);
        g_raw[k] = raw_connect(k, g_db);
    }
}

static void unstall(void);

static void teardown(void)
{
    unstall();
    for (int k = 1; k <= 3; k++) {
        if (g_raw[k])
            mysql_close(g_raw[k]);
        g_raw[k] = NULL;
    }
}

static kg_store *open_plain(int k)
{
    char sock[300];
    node_sock(k, sock, sizeof(sock));
    kg_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.db_host = sock;
    cfg.db_user = "kuma";
    cfg.db_password = "kumapw";
    cfg.db_name = g_db;
    cfg.db_timeout_ms = 5000;
    char err[ERRLEN] = "";
    kg_store *s = store_open(&cfg, err, sizeof(err));
    cr_assert_not_null(s, "%s", err);
    return s;
}

static kg_store *open_on(int k)
{
    kg_store *s = open_plain(k);
    char err[ERRLEN] = "";
    cr_assert_eq(s->ops->ensure_schema(s, true, err, sizeof(err)), STORE_OK, "%s", err);
    return s;
}

static kg_store *open_node1(void) { return open_on(1); }
static kg_store *open_node2(void) { return open_on(2); }
static void exec_node1(const char *sql) { raw_exec(1, sql); }
static long long int_node1(const char *sql) { return raw_int(1, sql); }

static kg_store *h_open(void) { return open_plain(1); }
static void h_str_node1(const char *sql, char *buf, size_t len) { raw_str(1, sql, buf, len); }

/* Everything a store must do (store_cases.h), with the store and the "Kuma node" on node1. */
static const store_harness H = {
    .open = h_open,
    .exec = exec_node1,
    .query_int = int_node1,
    .query_str = h_str_node1,
    .settle_ms = 3100, /* store_mariadb.c PROBE_SETTLE_S, in whole seconds of server time */
    .widen_node_sql = "ALTER TABLE node MODIFY host VARCHAR(1000),"
                      " MODIFY node_name VARCHAR(1000), MODIFY status VARCHAR(100)",
};

static const lease_harness LH = {
    .open_a = open_node1,
    .open_b = open_node2,
    .exec = exec_node1,
    .query_int = int_node1,
};

TestSuite(galera, .init = setup, .fini = teardown, .timeout = 120);

Test(galera, schema_is_idempotent) { case_schema_idempotent(&H); }
Test(galera, nodes_upsert_load_and_state_writes) { case_nodes(&H); }
Test(galera, node_states_of_many_nodes_in_one_call) { case_node_states_many(&H); }
Test(galera, long_node_strings_are_truncated_safely) { case_long_node_strings(&H); }
Test(galera, load_monitors_indexes_and_ours_flags) { case_load_monitors(&H); }
Test(galera, apply_moves_of_each_kind) { case_apply_each_kind(&H); }
Test(galera, guard_skips_rows_changed_since_the_plan) { case_guard(&H); }
Test(galera, manual_pin_is_never_ours) { case_manual_pin(&H); }
Test(galera, fencing_blocks_every_write) { case_fencing(&H); }
Test(galera, events_are_stored_in_utc) { case_events(&H); }
Test(galera, bulk_moves_and_escaping) { case_bulk_and_escaping(&H); }
Test(galera, guard_skips_monitors_switched_on_or_off) { case_guard_active(&H); }
Test(galera, moves_to_many_targets_in_one_apply) { case_many_targets(&H); }
Test(galera, change_probe_notices_every_change, .timeout = 60) { case_change_probe(&H); }

Test(galera, lease_race_across_nodes_has_one_winner) { case_lease_race(&LH, 30); }
Test(galera, lease_settled_across_nodes_has_no_churn) { case_lease_steady(&LH, 3000); }
Test(galera, lease_release_and_crash_across_nodes) { case_lease_release(&LH); }

/* ---- replication stalled on one node --------------------------------------------------- */

static MYSQL *g_stall;

/* Node k stops applying replicated writes (see the top of the file). */
static void stall_node(int k)
{
    raw_exec(1, "CREATE TABLE IF NOT EXISTS kg_stall (id INT PRIMARY KEY, v INT) ENGINE=InnoDB");
    raw_exec(1, "INSERT IGNORE INTO kg_stall VALUES (1, 0)");
    /* node k must have the row before the lock is taken */
    cr_assert_eq(raw_int(k, "SET STATEMENT wsrep_sync_wait = 1 FOR SELECT COUNT(*) FROM kg_stall"),
                 1);
    g_stall = raw_connect(k, g_db);
    cr_assert_eq(mysql_query(g_stall, "SET SESSION wsrep_on = OFF"), 0, "%s",
                 mysql_error(g_stall));
    cr_assert_eq(mysql_query(g_stall, "START TRANSACTION"), 0);
    cr_assert_eq(mysql_query(g_stall, "SELECT v FROM kg_stall WHERE id = 1 FOR UPDATE"), 0);
    mysql_free_result(mysql_store_result(g_stall));
    int other = k == 1 ? 2 : 1;
    raw_exec(other, "UPDATE kg_stall SET v = v + 1 WHERE id = 1"); /* node k's applier waits */
}

static void unstall(void)
{
    if (!g_stall)
        return;
    mysql_query(g_stall, "COMMIT");
    mysql_close(g_stall);
    g_stall = NULL;
}

/* A stale node holds back a local COMMIT until it has caught up (the writes before it must
 * be certified there first), so the stall ends while the stale leader's commit waits. */
static void *unstall_later(void *arg)
{
    (void)arg;
    usleep(1500 * 1000);
    unstall();
    return NULL;
}

static pthread_t g_unstaller;

static void unstall_in_a_while(void)
{
    cr_assert_eq(pthread_create(&g_unstaller, NULL, unstall_later, NULL), 0);
}

static void unstall_join(void)
{
    pthread_join(g_unstaller, NULL);
}

/* A takes the lease on node1 with a short TTL, node1 stalls, B (node2) takes over once it
 * expired.  Returns A's generation; node1 still shows it. */
static int64_t stale_leader_setup(kg_store *a, kg_store *b)
{
    char err[ERRLEN] = "";
    bool leader;
    int64_t ga = 0, gb = 0;
    cr_assert_eq(a->ops->lease(a, "ctl-a", 1000, &leader, &ga, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_assert(leader);
    stall_node(1);
    bool taken = false;
    for (int i = 0; i < 60 && !taken; i++) { /* A's lease expires after 1 s */
        usleep(100 * 1000);
        cr_assert_eq(b->ops->lease(b, "ctl-b", 30000, &leader, &gb, err, sizeof(err)), STORE_OK,
                     "%s", err);
        taken = leader;
    }
    cr_assert(taken, "B never took the expired lease");
    cr_assert_eq(gb, ga + 1);
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT generation FROM kumaguard_leader WHERE id = 1");
    cr_assert_eq(raw_int(1, sql), ga, "node1 is not stale: the test would prove nothing");
    cr_assert_eq(raw_int(2, sql), gb);
    return ga;
}

/* The finding: with replication stalled, a stale leader read its old generation and
 * its write committed (the fence was a read).  Now the fence writes the lease row and
 * certification refuses the stale transaction. */
Test(galera, stale_leader_write_is_fenced_when_replication_stalled)
{
    kg_store *a = open_on(1);
    kg_store *b = open_on(2);
    raw_exec(1, "INSERT INTO node (node_id, node_name, host) VALUES ('n1', 'n1', 'h1:1'),"
                " ('n2', 'n2', 'h2:1')");
    raw_exec(1, "INSERT INTO monitor (id, name, active, node_id) VALUES (1, 'm1', 1, 'n1')");
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set;
    load_all(a, &tab, &set);
    int64_t ga = stale_leader_setup(a, b);

    a->fence_generation = ga; /* A still thinks it leads */
    long long cert_failures = raw_int(1, "SELECT VARIABLE_VALUE FROM"
                                         " information_schema.global_status WHERE"
                                         " VARIABLE_NAME = 'wsrep_local_cert_failures'");
    char err[ERRLEN] = "";
    plan_move mv = move_for(find_monitor(&set, 1), MOVE_SET_OVERRIDE, idx(&tab, "n2"), false);
    store_apply_result res;
    unstall_in_a_while();
    int rc = a->ops->apply_moves(a, &tab, &mv, 1, "failover", &res, err, sizeof(err));
    unstall_join();
    cr_expect_eq(rc, STORE_FENCED, "stale leader's apply: rc %d: %s", rc, err);
    cr_expect_eq(res.applied, 0);
    cr_expect_gt(raw_int(1, "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE"
                            " VARIABLE_NAME = 'wsrep_local_cert_failures'"),
                 cert_failures, "the stale write was not refused by certification: the test"
                 " did not exercise what it is about");
    char v[64];
    raw_str(2, "SET STATEMENT wsrep_sync_wait = 1 FOR SELECT COALESCE(assigned_node, 'none')"
               " FROM monitor WHERE id = 1", v, sizeof(v));
    cr_expect_str_eq(v, "none", "the stale leader's move committed");
    raw_str(1, "SET STATEMENT wsrep_sync_wait = 1 FOR SELECT status FROM node WHERE"
               " node_id = 'n1'", v, sizeof(v));
    cr_expect_str_eq(v, "online", "the stale leader's node state committed");
    /* once node1 caught up, A sees B lead */
    bool leader;
    int64_t g = 0;
    cr_assert_eq(a->ops->lease(a, "ctl-a", 1000, &leader, &g, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_expect_not(leader);
    cr_expect_eq(g, ga + 1);
    store_free_monitors(&set);
    nametab_free(&tab);
    store_close(a);
    store_close(b);
}

/* The stale leader renews: its UPDATE matches the old row on node1 and fails certification
 * (1213) at its commit — that is the lease lost to B, never a database outage.  The server's
 * own retry of autocommit statements (wsrep_retry_autocommit) is turned off on node1, so the
 * 1213 reaches the store. */
Test(galera, certification_failure_at_lease_commit_is_lease_lost)
{
    raw_exec(1, "SET GLOBAL wsrep_retry_autocommit = 0");
    kg_store *a = open_on(1);
    kg_store *b = open_on(2);
    int64_t ga = stale_leader_setup(a, b);
    long long cert_failures = raw_int(1, "SELECT VARIABLE_VALUE FROM"
                                         " information_schema.global_status WHERE"
                                         " VARIABLE_NAME = 'wsrep_local_cert_failures'");
    char err[ERRLEN] = "";
    bool leader = true;
    int64_t g = 0;
    unstall_in_a_while();
    int rc = a->ops->lease(a, "ctl-a", 1000, &leader, &g, err, sizeof(err));
    unstall_join();
    raw_exec(1, "SET GLOBAL wsrep_retry_autocommit = DEFAULT");
    cr_expect_gt(raw_int(1, "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE"
                            " VARIABLE_NAME = 'wsrep_local_cert_failures'"),
                 cert_failures, "the stale renewal did not fail certification");
    cr_expect(rc == STORE_FENCED || rc == STORE_OK, "a lost lease reported as an error: %s",
              err);
    cr_expect_not(leader);
    cr_expect(rc == STORE_FENCED || g == ga + 1, "rc %d generation %lld", rc, (long long)g);
    cr_assert_eq(a->ops->lease(a, "ctl-a", 1000, &leader, &g, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_expect_not(leader);
    cr_expect_eq(g, ga + 1);
    store_close(a);
    store_close(b);
}

/* A node cut off from the others (not in the primary component) must not let its controller
 * lead or write: 1047/1180 there are "lease lost". */
Test(galera, node_outside_the_primary_component_loses_the_lease)
{
    kg_store *c = open_on(3);
    char err[ERRLEN] = "";
    bool leader;
    int64_t g = 0;
    cr_assert_eq(c->ops->lease(c, "ctl-c", 30000, &leader, &g, err, sizeof(err)), STORE_OK, "%s",
                 err);
    cr_assert(leader);
    c->fence_generation = g;
    raw_exec(3, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'");
    bool nonprimary = false;
    for (int i = 0; i < 100 && !nonprimary; i++) { /* at most 10 s */
        char st[64];
        raw_str(3, "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE"
                   " VARIABLE_NAME = 'wsrep_cluster_status'", st, sizeof(st));
        nonprimary = strcmp(st, "Primary") != 0;
        if (!nonprimary)
            usleep(100 * 1000);
    }
    int rc_lease = c->ops->lease(c, "ctl-c", 30000, &leader, &g, err, sizeof(err));
    char lease_err[ERRLEN];
    snprintf(lease_err, sizeof(lease_err), "%s", err);
    kg_event ev = {.kind = EV_LEADER};
    int rc_write = c->ops->append_event(c, &ev, err, sizeof(err));
    raw_exec(3, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'");
    cr_assert(nonprimary, "node3 never left the primary component");
    cr_expect_eq(rc_lease, STORE_FENCED, "lease on an isolated node: %s", lease_err);
    cr_expect_not(leader);
    cr_expect_eq(rc_write, STORE_FENCED, "fenced write on an isolated node: %s", err);
    /* wait for node3 to rejoin, so later tests have three nodes */
    bool back = false;
    for (int i = 0; i < 300 && !back; i++) {
        char size[64], state[64];
        raw_str(1, "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE"
                   " VARIABLE_NAME = 'wsrep_cluster_size'", size, sizeof(size));
        raw_str(3, "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE"
                   " VARIABLE_NAME = 'wsrep_local_state_comment'", state, sizeof(state));
        back = strcmp(size, "3") == 0 && strcmp(state, "Synced") == 0;
        if (!back)
            usleep(100 * 1000);
    }
    cr_expect(back, "node3 did not rejoin");
    store_close(c);
}

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
