/* bench_planner.c — time and peak memory of the assignment planner (assign.c) alone, on
 * 1,000,000 monitors over 100 nodes: failover of one dead node, revert when it comes back,
 * force-rebalance-all, and a rebalance from a skewed start.
 *
 * Prints figures only (no pass/fail); run it alone on the machine, it is single-threaded.
 *   bench_planner [monitors] [nodes] [repeats]   (defaults 1000000 100 5) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "assign.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss; /* kilobytes on Linux */
}

typedef int (*planner)(const plan_view *, const plan_options *, plan_result *);

/* Runs a planner `repeats` times on the same view; prints best and mean time. */
static int time_plan(const char *label, planner fn, const plan_view *v, const plan_options *o,
                     plan_result *r, int repeats)
{
    double best = 1e300, sum = 0;
    for (int k = 0; k < repeats; k++) {
        double t0 = now_ms();
        if (fn(v, o, r) != 0) {
            fprintf(stderr, "%s: planner failed\n", label);
            return -1;
        }
        double dt = now_ms() - t0;
        sum += dt;
        if (dt < best)
            best = dt;
    }
    printf("%-34s %9zu moves  best %8.1f ms  mean %8.1f ms  (failover %d, revert %d, adopt %d, "
           "rebalance %d, over-capacity %d)  peak RSS %ld KiB\n",
           label, r->n_moves, best, sum / repeats, r->n_failover, r->n_revert, r->n_adopt,
           r->n_rebalance, r->n_over_capacity, peak_rss_kb());
    return 0;
}

static void apply(plan_monitor *mon, const plan_result *r)
{
    for (size_t k = 0; k < r->n_moves; k++) {
        const plan_move *mv = &r->moves[k];
        plan_monitor *m = &mon[mv->monitor_index];
        if (m->home != mv->expect_home || m->over != mv->expect_over)
            continue;
        if (mv->kind == MOVE_SET_OVERRIDE) {
            m->over = mv->to;
            m->ours = 1;
        } else if (mv->kind == MOVE_CLEAR_OVERRIDE) {
            m->over = -1;
            m->ours = 0;
        } else {
            m->home = mv->to;
            if (mv->clear_override) {
                m->over = -1;
                m->ours = 0;
            }
        }
    }
}

int main(int argc, char **argv)
{
    size_t n_mon = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int n_nodes = argc > 2 ? atoi(argv[2]) : 100;
    int repeats = argc > 3 ? atoi(argv[3]) : 5;
    if (n_nodes < 2 || n_mon == 0 || repeats < 1) {
        fprintf(stderr, "usage: %s [monitors>0] [nodes>=2] [repeats>=1]\n", argv[0]);
        return 2;
    }
    long rss_start = peak_rss_kb();
    plan_node *nodes = calloc((size_t)n_nodes, sizeof(plan_node));
    char (*ids)[16] = calloc((size_t)n_nodes, sizeof(*ids));
    plan_monitor *mon = calloc(n_mon, sizeof(plan_monitor));
    if (!nodes || !ids || !mon) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    int limit = (int)(n_mon / (size_t)n_nodes * 2); /* room for failover, not unlimited */
    for (int j = 0; j < n_nodes; j++) {
        snprintf(ids[j], sizeof(ids[j]), "node%d", j + 1);
        nodes[j] = (plan_node){.id = ids[j], .state = NODE_ONLINE, .limit = limit,
                               .revert_ok = true};
    }
    for (size_t i = 0; i < n_mon; i++)
        mon[i] = (plan_monitor){.id = (int64_t)i + 1, .home = (int32_t)(i % (size_t)n_nodes),
                                .over = -1, .active = 1};
    plan_view v = {.nodes = nodes, .n_nodes = n_nodes, .monitors = mon, .n_monitors = n_mon};
    plan_options o;
    plan_options_default(&o);
    plan_result r;
    plan_result_init(&r);
    printf("planner benchmark: %zu monitors, %d nodes, limit %d, %d repeats; "
           "plan_monitor %zu B, plan_move %zu B\n",
           n_mon, n_nodes, limit, repeats, sizeof(plan_monitor), sizeof(plan_move));
    printf("peak RSS before input %ld KiB, with input built %ld KiB\n", rss_start, peak_rss_kb());

    int dead = n_nodes / 2;
    int rc = 0;
    nodes[dead].state = NODE_OFFLINE;
    nodes[dead].revert_ok = false;
    rc |= time_plan("converge, one node dead", plan_converge, &v, &o, &r, repeats);
    apply(mon, &r);
    rc |= time_plan("converge, nothing to do", plan_converge, &v, &o, &r, repeats);

    nodes[dead].state = NODE_ONLINE;
    nodes[dead].revert_ok = true;
    rc |= time_plan("converge, revert batch of 500", plan_converge, &v, &o, &r, repeats);
    plan_options all = o;
    all.revert_batch = (int)n_mon;
    rc |= time_plan("converge, revert everything", plan_converge, &v, &all, &r, repeats);
    apply(mon, &r);

    rc |= time_plan("force-rebalance-all (from scratch)", plan_force_all, &v, &o, &r, repeats);

    /* Skewed start: every monitor homed on the first quarter of the nodes (limits lifted). */
    for (int j = 0; j < n_nodes; j++)
        nodes[j].limit = (int)n_mon;
    int quarter = n_nodes / 4 > 0 ? n_nodes / 4 : 1;
    for (size_t i = 0; i < n_mon; i++)
        mon[i].home = (int32_t)(i % (size_t)quarter);
    rc |= time_plan("rebalance from 1/4 of nodes", plan_rebalance, &v, &o, &r, repeats);
    apply(mon, &r);
    rc |= time_plan("rebalance, already balanced", plan_rebalance, &v, &o, &r, repeats);

    printf("peak RSS at end %ld KiB (input monitors alone: %zu KiB)\n", peak_rss_kb(),
           n_mon * sizeof(plan_monitor) / 1024);
    plan_result_free(&r);
    free(mon);
    free(ids);
    free(nodes);
    return rc ? 1 : 0;
}
