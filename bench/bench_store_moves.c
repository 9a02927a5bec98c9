/* bench_store_moves.c — how long a failover of N monitors takes through the MariaDB store
 * (set-based: one load, one transaction of guarded moves), compared in the same run with the
 * Lua version's way (one autocommitted `UPDATE monitor SET assigned_node=? WHERE id=?` per
 * monitor), measured on a sample and extrapolated, and with the floor: one bare UPDATE of
 * assigned_node on all N rows, InnoDB's own cost without guard or bookkeeping.
 *
 *   bench_store_moves SOCKET [N] [SAMPLE]      (defaults: N = 100000, SAMPLE = 2000)
 *
 * SOCKET is the unix socket of a throwaway server with database kuma, user kuma/kumapw (see
 * scripts/mariadb-test-server.sh; bench/store_moves.sh does it all).  The kuma database is
 * wiped.  N monitors all live on node n1 of 10 nodes; n1 fails, every monitor gets an override
 * to one of n2..n10.  Prints one line per measurement and the ratio; exit status 0 only when
 * every move was applied. */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "nametab.h"
#include "store.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int run(MYSQL *db, const char *sql)
{
    if (mysql_query(db, sql)) {
        fprintf(stderr, "bench: %.120s: %s\n", sql, mysql_error(db));
        return -1;
    }
    return 0;
}

/* Fresh schema through the store (init_schema), then N monitors in 1000-row INSERTs. */
static int fill(kg_store *s, MYSQL *db, long n)
{
    if (run(db, "DROP TABLE IF EXISTS node, monitor, kumaguard_override, kumaguard_event,"
                " kumaguard_leader"))
        return -1;
    char err[512] = "";
    if (s->ops->ensure_schema(s, true, err, sizeof(err)) != STORE_OK) {
        fprintf(stderr, "bench: %s\n", err);
        return -1;
    }
    for (int i = 1; i <= 10; i++) {
        char id[16], host[32];
        snprintf(id, sizeof(id), "n%d", i);
        snprintf(host, sizeof(host), "127.0.0.1:%d", 3000 + i);
        if (s->ops->upsert_node(s, id, host, err, sizeof(err)) != STORE_OK) {
            fprintf(stderr, "bench: %s\n", err);
            return -1;
        }
    }
    size_t cap = 64 + 1000 * 48;
    char *sql = malloc(cap);
    if (!sql)
        return -1;
    int rc = 0;
    for (long done = 0; rc == 0 && done < n;) {
        size_t len = (size_t)snprintf(sql, cap,
                                      "INSERT INTO monitor (id, name, active, node_id) VALUES ");
        for (int k = 0; k < 1000 && done < n; k++, done++)
            len += (size_t)snprintf(sql + len, cap - len, "%s(%ld,'m%ld',1,'n1')", k ? "," : "",
                                    done + 1, done + 1);
        rc = run(db, sql);
    }
    free(sql);
    return rc;
}

/* The Lua version's way: one autocommitted UPDATE per monitor, on monitors first..first+k. */
static double per_row_updates(MYSQL *db, long first, long k)
{
    MYSQL_STMT *st = mysql_stmt_init(db);
    static const char sql[] = "UPDATE monitor SET assigned_node = ? WHERE id = ?";
    if (!st || mysql_stmt_prepare(st, sql, sizeof(sql) - 1)) {
        fprintf(stderr, "bench: prepare: %s\n", st ? mysql_stmt_error(st) : "oom");
        return -1;
    }
    char node[16];
    unsigned long node_len = 0;
    long long id = 0;
    MYSQL_BIND b[2];
    memset(b, 0, sizeof(b));
    b[0].buffer_type = MYSQL_TYPE_STRING;
    b[0].buffer = node;
    b[0].buffer_length = sizeof(node);
    b[0].length = &node_len;
    b[1].buffer_type = MYSQL_TYPE_LONGLONG;
    b[1].buffer = &id;
    double t0 = now_ms();
    for (long i = 0; i < k; i++) {
        id = first + i;
        node_len = (unsigned long)snprintf(node, sizeof(node), "n%lld", 2 + (id % 9));
        if (mysql_stmt_bind_param(st, b) || mysql_stmt_execute(st)) {
            fprintf(stderr, "bench: per-row update: %s\n", mysql_stmt_error(st));
            mysql_stmt_close(st);
            return -1;
        }
    }
    double t = now_ms() - t0;
    mysql_stmt_close(st);
    return t;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET [N] [SAMPLE]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 100000;
    long sample = argc > 3 ? atol(argv[3]) : 2000;
    if (n < 1 || sample < 1 || sample > n) {
        fprintf(stderr, "bench: need 1 <= SAMPLE <= N\n");
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
    int status = 1;
    kg_nametab tab;
    nametab_init(&tab);
    store_monitor_set set = {0};
    plan_move *mv = NULL;
    double t0 = now_ms();
    if (fill(s, db, n))
        goto out;
    printf("fill            %8ld monitors on n1           %9.0f ms\n", n, now_ms() - t0);

    t0 = now_ms();
    if (s->ops->load_monitors(s, &tab, &set, err, sizeof(err)) != STORE_OK) {
        fprintf(stderr, "bench: %s\n", err);
        goto out;
    }
    double t_load = now_ms() - t0;
    int32_t targets[9];
    for (int i = 0; i < 9; i++) {
        char name[16];
        int len = snprintf(name, sizeof(name), "n%d", i + 2);
        targets[i] = nametab_intern(&tab, name, (size_t)len);
    }
    mv = calloc(set.n, sizeof(*mv));
    if (!mv)
        goto out;
    for (size_t i = 0; i < set.n; i++) {
        const plan_monitor *m = &set.monitors[i];
        mv[i] = (plan_move){.monitor_id = m->id, .monitor_index = (uint32_t)i,
                            .kind = MOVE_SET_OVERRIDE, .to = targets[m->id % 9],
                            .expect_home = m->home, .expect_over = m->over};
    }
    store_apply_result res;
    t0 = now_ms();
    if (s->ops->apply_moves(s, &tab, mv, set.n, "failover", &res, err, sizeof(err))
        != STORE_OK) {
        fprintf(stderr, "bench: %s\n", err);
        goto out;
    }
    double t_apply = now_ms() - t0;
    printf("load_monitors   %8zu rows                     %9.0f ms\n", set.n, t_load);
    printf("apply_moves     %8zu SET_OVERRIDE (1 trx)     %9.0f ms  (applied %zu, skipped %zu)\n",
           set.n, t_apply, res.applied, res.skipped);
    printf("set-based total %8zu moves (load + apply)     %9.0f ms\n", set.n, t_load + t_apply);

    /* Same run, same table: the per-row way on monitors that still point at n1. */
    if (run(db, "UPDATE monitor SET assigned_node = NULL WHERE id <= 1000000000") != 0)
        goto out;
    double t_rows = per_row_updates(db, 1, sample);
    if (t_rows < 0)
        goto out;
    double extrapolated = t_rows * (double)n / (double)sample;
    printf("per-row UPDATE  %8ld rows (autocommit)       %9.0f ms  -> %ld rows ~ %.0f ms\n",
           sample, t_rows, n, extrapolated);
    printf("ratio           per-row / set-based = %.1fx\n", extrapolated / (t_load + t_apply));

    /* The floor: InnoDB's own cost of changing assigned_node on every row, in one statement
     * with no guard and no bookkeeping.  apply_moves cannot be much cheaper than this. */
    if (run(db, "UPDATE monitor SET assigned_node = NULL") != 0)
        goto out;
    t0 = now_ms();
    if (run(db, "UPDATE monitor SET assigned_node = CONCAT('n', 2 + id % 9)") != 0)
        goto out;
    double t_floor = now_ms() - t0;
    printf("floor           %8ld rows, one bare UPDATE    %9.0f ms  (apply_moves = %.1fx floor)\n",
           n, t_floor, t_apply / t_floor);
    status = res.applied == (size_t)n ? 0 : 1;
out:
    free(mv);
    store_free_monitors(&set);
    nametab_free(&tab);
    mysql_close(db);
    store_close(s);
    return status;
}
