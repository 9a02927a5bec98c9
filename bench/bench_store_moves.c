/* bench_store_moves.c — how long a failover of N monitors takes through the MariaDB store
 * (set-based: one load, one transaction of guarded moves), compared in the same run with the
 * floor: one bare UPDATE of assigned_node on the same N rows, InnoDB's own cost without guard
 * or bookkeeping; and with the Lua version's way (one autocommitted `UPDATE monitor SET
 * assigned_node=? WHERE id=?` per monitor), measured on a sample and extrapolated.
 *
 *   bench_store_moves SOCKET [N] [SAMPLE] [ROUNDS] [SERVER_PID]
 *       defaults: N = 100000, SAMPLE = 2000, ROUNDS = 5; SERVER_PID (the mariadbd process)
 *       adds the server's CPU time of each step
 *
 * SOCKET is the unix socket of a throwaway server with database kuma, user kuma/kumapw (see
 * scripts/mariadb-test-server.sh; bench/store_moves.sh does it all).  The kuma database is
 * wiped.  N monitors all live on node n1 of 10 nodes; n1 fails, every monitor gets an override
 * to one of n2..n10.  Each round resets the rows, waits until InnoDB has purged and
 * checkpointed the previous round, then times apply_moves and the floor (in alternating order,
 * so neither always runs on the other's leftovers).  The machine is shared, so the figures
 * that count are the medians and their ratio.  Exit status 0 only when every move of every
 * round was applied. */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* The last column of the first row as a number (-1 on error or NULL). */
static long long query_num(MYSQL *db, const char *sql)
{
    if (run(db, sql))
        return -1;
    MYSQL_RES *res = mysql_store_result(db);
    if (!res)
        return -1;
    MYSQL_ROW row = mysql_fetch_row(res);
    unsigned int last = mysql_num_fields(res) - 1;
    long long v = row && row[last] ? strtoll(row[last], NULL, 10) : -1;
    mysql_free_result(res);
    return v;
}

/* Waits (at most 30 s) until the previous step's undo is purged and its redo checkpointed, so
 * every timed step starts from the same state. */
static void wait_quiet(MYSQL *db)
{
    for (int i = 0; i < 300; i++) {
        long long hist = query_num(db, "SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'");
        long long age = query_num(db, "SHOW GLOBAL STATUS LIKE 'Innodb_checkpoint_age'");
        if (hist >= 0 && hist < 100 && age >= 0 && age < (1 << 20))
            return;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* CPU time (user + system) of process pid so far, in ms; 0 when pid is 0 or unreadable. */
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
    const char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return 0;
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int reset_rows(MYSQL *db)
{
    if (run(db, "UPDATE monitor SET assigned_node = NULL WHERE assigned_node IS NOT NULL") ||
        run(db, "DELETE FROM kumaguard_override"))
        return -1;
    wait_quiet(db);
    return 0;
}

typedef struct {
    double wall, cpu;
} timing;

/* One failover through the store: load, plan every monitor onto n2..n10, apply. */
static int timed_apply(kg_store *s, long pid, kg_nametab *tab, double *t_load, timing *t,
                       size_t *applied)
{
    char err[512] = "";
    store_monitor_set set = {0};
    double t0 = now_ms();
    if (s->ops->load_monitors(s, tab, &set, err, sizeof(err)) != STORE_OK) {
        fprintf(stderr, "bench: %s\n", err);
        return -1;
    }
    *t_load = now_ms() - t0;
    int32_t targets[9];
    for (int i = 0; i < 9; i++) {
        char name[16];
        int len = snprintf(name, sizeof(name), "n%d", i + 2);
        targets[i] = nametab_intern(tab, name, (size_t)len);
    }
    plan_move *mv = calloc(set.n ? set.n : 1, sizeof(*mv));
    if (!mv) {
        store_free_monitors(&set);
        return -1;
    }
    for (size_t i = 0; i < set.n; i++) {
        const plan_monitor *m = &set.monitors[i];
        mv[i] = (plan_move){.monitor_id = m->id, .monitor_index = (uint32_t)i,
                            .kind = MOVE_SET_OVERRIDE, .to = targets[m->id % 9],
                            .expect_active = m->active, .expect_home = m->home,
                            .expect_over = m->over};
    }
    store_apply_result res = {0};
    double c0 = cpu_ms(pid);
    t0 = now_ms();
    int rc = s->ops->apply_moves(s, tab, mv, set.n, "failover", &res, err, sizeof(err));
    t->wall = now_ms() - t0;
    t->cpu = cpu_ms(pid) - c0;
    if (rc != STORE_OK)
        fprintf(stderr, "bench: %s\n", err);
    *applied = res.applied;
    free(mv);
    store_free_monitors(&set);
    return rc == STORE_OK ? 0 : -1;
}

/* The floor: InnoDB's own cost of changing assigned_node on every row to the same values, in
 * one statement with no guard and no bookkeeping.  apply_moves cannot be much cheaper. */
static int timed_floor(MYSQL *db, long pid, timing *t)
{
    double c0 = cpu_ms(pid), t0 = now_ms();
    if (run(db, "UPDATE monitor SET assigned_node = CONCAT('n', 2 + id % 9)"))
        return -1;
    t->wall = now_ms() - t0;
    t->cpu = cpu_ms(pid) - c0;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET [N] [SAMPLE] [ROUNDS] [SERVER_PID]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 100000;
    long sample = argc > 3 ? atol(argv[3]) : 2000;
    int rounds = argc > 4 ? atoi(argv[4]) : 5;
    long pid = argc > 5 ? atol(argv[5]) : 0;
    if (n < 1 || sample < 1 || sample > n || rounds < 1 || rounds > 50) {
        fprintf(stderr, "bench: need 1 <= SAMPLE <= N and 1 <= ROUNDS <= 50\n");
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
    double t0 = now_ms();
    if (fill(s, db, n))
        goto out;
    printf("fill            %8ld monitors on n1           %9.0f ms\n", n, now_ms() - t0);

    double apply_w[50], floor_w[50], apply_c[50], floor_c[50], ratio_w[50], load_ms = 0;
    bool all_applied = true;
    for (int r = 0; r < rounds; r++) {
        timing ta = {0, 0}, tf = {0, 0};
        size_t applied = 0;
        for (int step = 0; step < 2; step++) {
            bool do_apply = (step == 0) == (r % 2 == 0);
            if (reset_rows(db))
                goto out;
            if (do_apply ? timed_apply(s, pid, &tab, &load_ms, &ta, &applied)
                         : timed_floor(db, pid, &tf))
                goto out;
        }
        all_applied &= applied == (size_t)n;
        apply_w[r] = ta.wall;
        floor_w[r] = tf.wall;
        apply_c[r] = ta.cpu;
        floor_c[r] = tf.cpu;
        ratio_w[r] = ta.wall / tf.wall;
        printf("round %d         apply_moves %6.0f ms (server CPU %5.0f ms, applied %zu),"
               " floor %6.0f ms (server CPU %5.0f ms)  ratio %.2f\n",
               r + 1, ta.wall, ta.cpu, applied, tf.wall, tf.cpu, ratio_w[r]);
    }
    printf("load_monitors   %8ld rows                     %9.0f ms\n", n, load_ms);
    double mr = median(ratio_w, rounds), ma = median(apply_w, rounds);
    double mf = median(floor_w, rounds);
    printf("median          apply_moves %.0f ms, floor (one bare UPDATE of the same rows)"
           " %.0f ms\n", ma, mf);
    printf("ratio           apply_moves / floor = %.2f (median of the rounds' ratios %.2f)\n",
           ma / mf, mr);
    if (pid > 0) {
        double mca = median(apply_c, rounds), mcf = median(floor_c, rounds);
        printf("server CPU      apply_moves %.0f ms, floor %.0f ms: ratio %.2f\n", mca, mcf,
               mca / mcf);
    }

    /* Same run, same table: the per-row way on monitors that still point at n1. */
    if (reset_rows(db))
        goto out;
    double t_rows = per_row_updates(db, 1, sample);
    if (t_rows < 0)
        goto out;
    double extrapolated = t_rows * (double)n / (double)sample;
    printf("per-row UPDATE  %8ld rows (autocommit)       %9.0f ms  -> %ld rows ~ %.0f ms"
           " = %.1fx apply_moves\n", sample, t_rows, n, extrapolated, extrapolated / ma);
    status = all_applied ? 0 : 1;
out:
    nametab_free(&tab);
    mysql_close(db);
    store_close(s);
    return status;
}
