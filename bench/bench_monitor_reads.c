/* bench_monitor_reads.c — kumaguard's steady-state load on the shared MariaDB with N monitors
 * (issue 15, "a light touch on the shared database"): rows read and server CPU per minute for
 * the way it used to be (the whole monitor table read at every refresh and before every
 * converge: twice per 10 s refresh interval on the leader) against the change probe
 * (store op monitors_changed, twice per interval, plus the full read it still makes at least
 * every PROBE_MAX_AGE_S = 300 s), measured in the same run.
 *
 *   bench_monitor_reads SOCKET [N] [SERVER_PID]     (defaults: N = 1000000)
 *
 * SOCKET is the unix socket of a throwaway server with database kuma, user kuma/kumapw (see
 * scripts/mariadb-test-server.sh; bench/monitor_reads.sh does it all).  The kuma database is
 * wiped.  Rows read are the server's Rows_read status counter; CPU is /proc/SERVER_PID/stat
 * (user + system, all threads).  Prints the figures; exit status 0 when the probe noticed a
 * change made by another connection and read nothing while nothing changed. */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "nametab.h"
#include "store.h"

#define REFRESH_S 10        /* KUMAGUARD refresh interval (controller default) */
#define READS_PER_REFRESH 2 /* the leader: refresh() and converge() both loaded the monitors */
#define FULL_READ_AGE_S 300 /* store_mariadb.c PROBE_MAX_AGE_S */

static int run(MYSQL *db, const char *sql)
{
    if (mysql_query(db, sql)) {
        fprintf(stderr, "bench: %.120s: %s\n", sql, mysql_error(db));
        return -1;
    }
    return 0;
}

static long long status(MYSQL *db, const char *name)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT variable_value FROM information_schema.global_status WHERE variable_name"
             " = '%s'", name);
    if (run(db, sql))
        return -1;
    MYSQL_RES *res = mysql_store_result(db);
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    long long v = row && row[0] ? strtoll(row[0], NULL, 10) : -1;
    if (res)
        mysql_free_result(res);
    return v;
}

static double cpu_ms(long pid)
{
    if (pid <= 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return 0;
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

typedef struct {
    long long rows;
    double cpu, wall;
} cost;

static cost measure_start(MYSQL *db, long pid)
{
    return (cost){status(db, "ROWS_READ"), cpu_ms(pid), now_ms()};
}

static cost measure_end(MYSQL *db, long pid, cost c, int times)
{
    return (cost){(status(db, "ROWS_READ") - c.rows) / times, (cpu_ms(pid) - c.cpu) / times,
                  (now_ms() - c.wall) / times};
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET [N] [SERVER_PID]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    long pid = argc > 3 ? atol(argv[3]) : 0;
    if (n < 1 || n > 100000000) {
        fprintf(stderr, "bench: N out of range\n");
        return 2;
    }
    kg_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.db_host = argv[1];
    cfg.db_user = "kuma";
    cfg.db_password = "kumapw";
    cfg.db_name = "kuma";
    cfg.db_timeout_ms = 60000;
    char err[512] = "";
    kg_store *s = store_open(&cfg, err, sizeof(err));
    MYSQL *db = mysql_init(NULL);
    if (!s || !db || !mysql_real_connect(db, NULL, "kuma", "kumapw", "kuma", 0, argv[1], 0)) {
        fprintf(stderr, "bench: cannot connect: %s\n", s ? (db ? mysql_error(db) : "oom") : err);
        return 1;
    }
    int status_rc = 1;
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set = {0};
    if (run(db, "DROP TABLE IF EXISTS node, monitor, kumaguard_override, kumaguard_event,"
                " kumaguard_leader"))
        goto out;
    if (s->ops->ensure_schema(s, true, err, sizeof(err)) != STORE_OK) {
        fprintf(stderr, "bench: %s\n", err);
        goto out;
    }
    /* N monitors over 10 nodes, 1 % of them failed over by us (a record each). */
    char sql[512];
    double t0 = now_ms();
    snprintf(sql, sizeof(sql),
             "INSERT INTO monitor (id, name, active, user_id, node_id, assigned_node) SELECT"
             " seq, CONCAT('monitor ', seq), 1, 1, CONCAT('node', seq %% 10),"
             " IF(seq %% 100 = 0, CONCAT('node', (seq + 1) %% 10), NULL) FROM seq_1_to_%ld", n);
    if (run(db, sql) ||
        run(db, "INSERT INTO kumaguard_override (monitor_id, node_id, home_node, reason,"
                " created_at) SELECT id, assigned_node, node_id, 'failover', UTC_TIMESTAMP()"
                " FROM monitor WHERE assigned_node IS NOT NULL"))
        goto out;
    printf("fill              %ld monitors (%ld with our override)    %6.0f ms\n", n, n / 100,
           now_ms() - t0);

    /* Warm up (buffer pool), then let the inserts settle past the probe's settle time. */
    if (s->ops->load_monitors(s, &tab, &set, err, sizeof(err)) != STORE_OK) {
        fprintf(stderr, "bench: %s\n", err);
        goto out;
    }
    store_free_monitors(&set);
    sleep(4);

    /* Before: a full read, as every refresh and every converge did. */
    const int reads = 3;
    cost c = measure_start(db, pid);
    for (int i = 0; i < reads; i++) {
        if (s->ops->load_monitors(s, &tab, &set, err, sizeof(err)) != STORE_OK) {
            fprintf(stderr, "bench: %s\n", err);
            goto out;
        }
        store_free_monitors(&set);
    }
    cost full = measure_end(db, pid, c, reads);

    /* After: the probe, with nothing changed. */
    const int probes = 600;
    int said_changed = 0;
    c = measure_start(db, pid);
    for (int i = 0; i < probes; i++) {
        bool changed = true;
        if (s->ops->monitors_changed(s, &changed, err, sizeof(err)) != STORE_OK) {
            fprintf(stderr, "bench: %s\n", err);
            goto out;
        }
        said_changed += changed;
    }
    cost probe = measure_end(db, pid, c, probes);

    /* And it still sees a Kuma node's change. */
    bool noticed = false;
    if (run(db, "UPDATE monitor SET active = 0 WHERE id = 1") ||
        s->ops->monitors_changed(s, &noticed, err, sizeof(err)) != STORE_OK)
        goto out;

    const double per_min = 60.0 / REFRESH_S * READS_PER_REFRESH; /* 12 on the leader */
    const double nets_per_min = 60.0 / FULL_READ_AGE_S;
    printf("full read         %lld rows read, server CPU %.0f ms, %.0f ms wall\n", full.rows,
           full.cpu, full.wall);
    printf("probe             %lld rows read, server CPU %.3f ms, %.3f ms wall (mean of %d;"
           " %d said changed)\n", probe.rows, probe.cpu, probe.wall, probes, said_changed);
    double old_rows = per_min * (double)full.rows, old_cpu = per_min * full.cpu;
    double new_rows = per_min * (double)probe.rows + nets_per_min * (double)full.rows;
    double new_cpu = per_min * probe.cpu + nets_per_min * full.cpu;
    printf("before, per min   %.0f full reads: %.0f rows read, server CPU %.0f ms = %.2f %% of"
           " one core\n", per_min, old_rows, old_cpu, old_cpu / 600.0);
    printf("after, per min    %.0f probes + %.1f full read: %.0f rows read, server CPU %.0f ms"
           " = %.3f %% of one core\n", per_min, nets_per_min, new_rows, new_cpu,
           new_cpu / 600.0);
    printf("ratio             after / before: rows %.4f, CPU %.4f\n",
           old_rows > 0 ? new_rows / old_rows : 0, old_cpu > 0 ? new_cpu / old_cpu : 0);
    printf("change noticed    %s (a Kuma node switched a monitor off)\n",
           noticed ? "yes" : "NO");
    status_rc = noticed && said_changed == 0 && probe.rows == 0 ? 0 : 1;
out:
    nametab_free(&tab);
    mysql_close(db);
    store_close(s);
    return status_rc;
}
