/* test_assign.c — hand-made scenarios for the assignment planner (assign.c) with exact expected
 * outcomes: failover spread, revert home in batches, pins, draining, adoption, capacity,
 * rebalance and force-rebalance.  The randomised property tests live in test_assign_props.c.
 *
 * Moves are applied to an in-memory table the way a database applies them: only when the row
 * still has the expected home and override (the guard). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assign.h"

#define MAX_NODES 8

typedef struct {
    int n_nodes;
    plan_node nodes[MAX_NODES];
    char ids[MAX_NODES][16];
    plan_monitor *mon;
    size_t n;
} cluster;

static void cl_init(cluster *c, int n_nodes, const char *const *ids, int limit)
{
    memset(c, 0, sizeof(*c));
    c->n_nodes = n_nodes;
    for (int j = 0; j < n_nodes; j++) {
        snprintf(c->ids[j], sizeof(c->ids[j]), "%s", ids[j]);
        c->nodes[j] = (plan_node){.id = c->ids[j], .state = NODE_ONLINE, .limit = limit,
                                  .revert_ok = true};
    }
}

/* Appends a monitor; ids must be appended in ascending order. */
static void cl_add(cluster *c, int64_t id, int home, int over, bool ours, bool active)
{
    c->mon = realloc(c->mon, (c->n + 1) * sizeof(plan_monitor));
    cr_assert_not_null(c->mon);
    c->mon[c->n++] = (plan_monitor){.id = id, .home = home, .over = over,
                                    .active = active ? 1 : 0, .ours = ours ? 1 : 0};
}

static plan_view cl_view(const cluster *c)
{
    return (plan_view){.nodes = c->nodes, .n_nodes = c->n_nodes, .monitors = c->mon,
                       .n_monitors = c->n};
}

/* Applies moves with the guard; returns how many rows changed. */
static size_t cl_apply(cluster *c, const plan_result *r)
{
    size_t applied = 0;
    for (size_t k = 0; k < r->n_moves; k++) {
        const plan_move *mv = &r->moves[k];
        cr_assert_lt(mv->monitor_index, c->n);
        plan_monitor *m = &c->mon[mv->monitor_index];
        cr_assert_eq(m->id, mv->monitor_id);
        if (m->home != mv->expect_home || m->over != mv->expect_over)
            continue;
        switch (mv->kind) {
        case MOVE_SET_OVERRIDE:
            m->over = mv->to;
            m->ours = 1;
            break;
        case MOVE_CLEAR_OVERRIDE:
            m->over = -1;
            m->ours = 0;
            break;
        case MOVE_SET_HOME:
            m->home = mv->to;
            if (mv->clear_override) {
                m->over = -1;
                m->ours = 0;
            }
            break;
        default:
            cr_assert_fail("unknown move kind %d", mv->kind);
        }
        applied++;
    }
    return applied;
}

static int cl_load(const cluster *c, int node)
{
    int load[MAX_NODES];
    plan_view v = cl_view(c);
    plan_count_load(&v, load);
    return load[node];
}

static void cl_free(cluster *c)
{
    free(c->mon);
    c->mon = NULL;
}

static const char *const three[] = {"node1", "node2", "node3"};

/* 3 nodes x 100 monitors, homes round-robin: monitor i lives on node (i-1)%3. */
static void three_by_hundred(cluster *c, int limit)
{
    cl_init(c, 3, three, limit);
    for (int i = 1; i <= 300; i++)
        cl_add(c, i, (i - 1) % 3, -1, false, true);
}

static plan_options opts(int batch, double tol)
{
    return (plan_options){.revert_batch = batch, .tolerance = tol};
}

/* ------------------------------------------------------------------------------------------ */

Test(assign_basic, defaults_and_empty_view)
{
    plan_options o;
    plan_options_default(&o);
    cr_assert_gt(o.revert_batch, 0);
    cr_assert_float_eq(o.tolerance, 0.1, 1e-12);

    plan_view empty = {0};
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&empty, &o, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    cr_assert_eq(plan_rebalance(&empty, &o, &r), 0);
    cr_assert_eq(plan_force_all(&empty, &o, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    plan_result_free(&r);
}

Test(assign_basic, rejects_reference_outside_node_table)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    cl_add(&c, 1, 0, -1, false, true);
    cl_add(&c, 2, 3, -1, false, true); /* node index 3 does not exist */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), -1);
    cr_assert_eq(plan_rebalance(&v, NULL, &r), -1);
    cr_assert_eq(plan_force_all(&v, NULL, &r), -1);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_basic, count_load_uses_effective_node_and_skips_inactive)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    cl_add(&c, 1, 0, -1, false, true);  /* node1 */
    cl_add(&c, 2, 0, 2, true, true);    /* override -> node3 */
    cl_add(&c, 3, 1, 2, false, true);   /* pin -> node3 */
    cl_add(&c, 4, 1, -1, false, false); /* inactive: no load */
    cl_add(&c, 5, -1, -1, false, true); /* runs nowhere */
    cr_assert_eq(cl_load(&c, 0), 1);
    cr_assert_eq(cl_load(&c, 1), 0);
    cr_assert_eq(cl_load(&c, 2), 2);
    cl_free(&c);
}

Test(assign_converge, dead_node_splits_exactly_in_half_and_reverts_home)
{
    cluster c;
    three_by_hundred(&c, 1000);
    c.nodes[1].state = NODE_OFFLINE;
    c.nodes[1].revert_ok = false;
    plan_view v = cl_view(&c);
    plan_options o = opts(500, 0.1);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 100);
    cr_assert_eq(r.n_failover, 100);
    cr_assert_eq(r.n_revert + r.n_adopt + r.n_over_capacity + r.n_no_target, 0);
    for (size_t k = 0; k < r.n_moves; k++) {
        const plan_move *mv = &r.moves[k];
        cr_assert_eq(mv->kind, MOVE_SET_OVERRIDE);
        cr_assert_eq(mv->expect_home, 1);
        cr_assert_eq(mv->expect_over, -1);
        cr_assert(mv->to == 0 || mv->to == 2);
        cr_assert_eq((mv->monitor_id - 1) % 3, 1, "only node2's monitors move");
        if (k > 0)
            cr_assert_gt(mv->monitor_id, r.moves[k - 1].monitor_id, "moves in id order");
    }
    cr_assert_eq(cl_apply(&c, &r), 100);
    cr_assert_eq(cl_load(&c, 0), 150);
    cr_assert_eq(cl_load(&c, 1), 0);
    cr_assert_eq(cl_load(&c, 2), 150);

    /* Converged: planning again moves nothing. */
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 0);

    /* Back online but still in hold-down: nothing goes home yet. */
    c.nodes[1].state = NODE_ONLINE;
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 0);

    /* Stable: all 100 overrides are cleared, each monitor returns to node2. */
    c.nodes[1].revert_ok = true;
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 100);
    cr_assert_eq(r.n_revert, 100);
    cr_assert_not(r.reverts_truncated);
    for (size_t k = 0; k < r.n_moves; k++) {
        cr_assert_eq(r.moves[k].kind, MOVE_CLEAR_OVERRIDE);
        cr_assert_eq(r.moves[k].expect_home, 1);
        cr_assert(r.moves[k].expect_over == 0 || r.moves[k].expect_over == 2);
    }
    cr_assert_eq(cl_apply(&c, &r), 100);
    for (int j = 0; j < 3; j++)
        cr_assert_eq(cl_load(&c, j), 100);
    for (size_t i = 0; i < c.n; i++)
        cr_assert_eq(c.mon[i].over, -1);
    plan_result_free(&r);
    cl_free(&c);
}

/* Issue 15: with bounded-load hashing, 100 monitors over 2 equal survivors could split 60/40.
 * Even placement splits them 50/50 whichever node dies. */
Test(assign_converge, failover_fills_equal_survivors_evenly)
{
    for (int dead = 0; dead < 3; dead++) {
        cluster c;
        three_by_hundred(&c, 1000);
        c.nodes[dead].state = NODE_OFFLINE;
        plan_view v = cl_view(&c);
        plan_result r;
        plan_result_init(&r);
        cr_assert_eq(plan_converge(&v, NULL, &r), 0); /* NULL options = defaults */
        cr_assert_eq(r.n_failover, 100);
        cl_apply(&c, &r);
        for (int j = 0; j < 3; j++)
            cr_assert_eq(cl_load(&c, j), j == dead ? 0 : 150, "node %d of 3, dead %d: %d", j,
                         dead, cl_load(&c, j));
        plan_result_free(&r);
        cl_free(&c);
    }
}

/* Least-loaded first: the survivors are levelled from the bottom; a node already above the
 * level gets nothing. */
Test(assign_converge, failover_levels_uneven_survivors_from_the_bottom)
{
    static const char *const four[] = {"node1", "node2", "node3", "node4"};
    cluster c;
    cl_init(&c, 4, four, 1000);
    int64_t id = 1;
    const int start[] = {100, 50, 10, 100}; /* node4 dies with its 100 */
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < start[j]; i++)
            cl_add(&c, id++, j, -1, false, true);
    c.nodes[3].state = NODE_OFFLINE;
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_failover, 100);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 100, "above the level: takes nothing");
    cr_assert_eq(cl_load(&c, 1), 80);
    cr_assert_eq(cl_load(&c, 2), 80);

    /* A remainder goes to the lower node ids, one each: 7 more over node2/node3 at 80. */
    for (int i = 0; i < 7; i++)
        cl_add(&c, id++, 3, -1, false, true);
    v = cl_view(&c);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 1), 84);
    cr_assert_eq(cl_load(&c, 2), 83);
    plan_result_free(&r);
    cl_free(&c);
}

/* 100,000 monitors of a dead node over 9 empty survivors: 11,111 or 11,112 each. */
Test(assign_converge, failover_of_100000_over_9_survivors_is_even_to_one_monitor)
{
    static const char *const ten[] = {"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"};
    plan_node nodes[10]; /* more than a cluster holds: built by hand */
    for (int j = 0; j < 10; j++)
        nodes[j] = (plan_node){.id = ten[j], .state = j == 4 ? NODE_OFFLINE : NODE_ONLINE,
                               .limit = 1000000, .revert_ok = true};
    plan_monitor *mon = calloc(100000, sizeof *mon);
    cr_assert_not_null(mon);
    for (int i = 0; i < 100000; i++)
        mon[i] = (plan_monitor){.id = i + 1, .home = 4, .over = -1, .active = 1};
    plan_view v = {.nodes = nodes, .n_nodes = 10, .monitors = mon, .n_monitors = 100000};
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_failover, 100000);
    int got[10] = {0};
    for (size_t k = 0; k < r.n_moves; k++)
        got[r.moves[k].to]++;
    int lo = 1 << 30, hi = 0;
    for (int j = 0; j < 10; j++) {
        if (j == 4)
            continue;
        lo = got[j] < lo ? got[j] : lo;
        hi = got[j] > hi ? got[j] : hi;
    }
    cr_assert_eq(lo, 11111);
    cr_assert_eq(hi, 11112);
    printf("100,000 monitors over 9 survivors: %d..%d each, spread %.4f %%\n", lo, hi,
           100.0 * (hi - lo) / lo);
    plan_result_free(&r);
    free(mon);
}

Test(assign_converge, reverts_come_in_batches_lowest_id_first)
{
    cluster c;
    three_by_hundred(&c, 1000);
    c.nodes[1].state = NODE_OFFLINE;
    plan_view v = cl_view(&c);
    plan_options o = opts(30, 0.1);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cl_apply(&c, &r);
    c.nodes[1].state = NODE_ONLINE;
    c.nodes[1].revert_ok = true;
    int64_t last_id = 0;
    size_t rounds[8] = {0};
    int n_rounds = 0;
    for (;;) {
        cr_assert_eq(plan_converge(&v, &o, &r), 0);
        if (r.n_moves == 0)
            break;
        cr_assert_lt(n_rounds, 8);
        rounds[n_rounds++] = r.n_moves;
        for (size_t k = 0; k < r.n_moves; k++) {
            cr_assert_gt(r.moves[k].monitor_id, last_id, "batches follow monitor id order");
            last_id = r.moves[k].monitor_id;
        }
        cr_assert_eq(r.reverts_truncated, r.n_moves == 30 && n_rounds < 4);
        cl_apply(&c, &r);
    }
    cr_assert_eq(n_rounds, 4);
    cr_assert_eq(rounds[0], 30);
    cr_assert_eq(rounds[1], 30);
    cr_assert_eq(rounds[2], 30);
    cr_assert_eq(rounds[3], 10);
    cr_assert_eq(cl_load(&c, 1), 100);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, revert_batch_zero_disables_reverts)
{
    cluster c;
    cl_init(&c, 2, three, 1000);
    cl_add(&c, 1, 0, 1, true, true);
    plan_view v = cl_view(&c);
    plan_options o = opts(0, 0.1);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    cr_assert_not(r.reverts_truncated);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, pins_are_never_moved_and_stranded_pins_are_counted)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    c.nodes[1].state = NODE_OFFLINE;
    c.nodes[2].state = NODE_DRAINING;
    cl_add(&c, 1, 0, 1, false, true);  /* pinned to dead node2: stranded, stays */
    cl_add(&c, 2, 1, 2, false, true);  /* pinned to draining node3: routable, stays */
    cl_add(&c, 3, 1, 1, false, false); /* inactive pin on dead node: not counted */
    cl_add(&c, 4, 1, -1, false, true); /* home on dead node2: moves */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_pinned_stranded, 1);
    cr_assert_eq(r.n_moves, 1);
    cr_assert_eq(r.moves[0].monitor_id, 4);
    cr_assert_eq(r.moves[0].to, 0);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, our_override_on_dead_node_moves_again_or_goes_home)
{
    cluster c;
    static const char *const four[] = {"node1", "node2", "node3", "node4"};
    cl_init(&c, 4, four, 1000);
    c.nodes[2].state = NODE_OFFLINE; /* node3 died while holding failover monitors */
    c.nodes[3].state = NODE_OFFLINE;
    c.nodes[3].revert_ok = false;
    cl_add(&c, 1, 1, 2, true, true);  /* home node2 stable: clears override, goes home */
    cl_add(&c, 2, 3, 2, true, true);  /* home node4 dead: new override */
    cl_add(&c, 3, 3, 2, false, true); /* the same, but a pin: untouched */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 2);
    cr_assert_eq(r.n_failover, 2);
    cr_assert_eq(r.n_revert, 0, "going home from a dead node is failover, not batch revert");
    cr_assert_eq(r.moves[0].monitor_id, 1);
    cr_assert_eq(r.moves[0].kind, MOVE_CLEAR_OVERRIDE);
    cr_assert_eq(r.moves[0].expect_over, 2);
    cr_assert_eq(r.moves[1].monitor_id, 2);
    cr_assert_eq(r.moves[1].kind, MOVE_SET_OVERRIDE);
    cr_assert(r.moves[1].to == 0 || r.moves[1].to == 1);
    cr_assert_eq(r.n_pinned_stranded, 1);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, inactive_monitors_are_not_load_and_never_move)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    c.nodes[1].state = NODE_OFFLINE;
    for (int i = 1; i <= 10; i++)
        cl_add(&c, i, 1, -1, false, false);
    cl_add(&c, 11, -1, -1, false, false);
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    cr_assert_eq(cl_load(&c, 1), 0);
    cr_assert_eq(plan_force_all(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    plan_result_free(&r);
    cl_free(&c);
}

/* Issue 12: overrides of ours stayed on monitors paused while failed over.  Converge clears
 * them (whatever state their nodes are in, even with no placeable node), leaves pins alone,
 * and guards each clear with active = 0 so a monitor switched back on meanwhile is skipped. */
Test(assign_converge, our_overrides_on_inactive_monitors_are_cleared)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    c.nodes[1].state = NODE_OFFLINE;
    cl_add(&c, 1, 1, 0, true, false);  /* paused while failed over from dead node2: clear */
    cl_add(&c, 2, 0, 2, true, false);  /* ours on a live node, home live: clear */
    cl_add(&c, 3, 1, 0, false, false); /* a pin: never ours to clear */
    cl_add(&c, 4, 1, 2, true, true);   /* active, home dead: keeps its failover override */
    cl_add(&c, 5, 2, -1, false, false);/* inactive, no override: nothing to do */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_inactive_cleared, 2);
    cr_assert_eq(r.n_moves, 2);
    cr_assert_eq(r.n_failover + r.n_revert + r.n_adopt, 0);
    for (size_t k = 0; k < r.n_moves; k++) {
        cr_assert_eq(r.moves[k].kind, MOVE_CLEAR_OVERRIDE);
        cr_assert_eq(r.moves[k].expect_active, 0, "guarded on the monitor still being off");
    }
    cr_assert_eq(r.moves[0].monitor_id, 1);
    cr_assert_eq(r.moves[1].monitor_id, 2);
    cl_apply(&c, &r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 0, "converged");

    /* With no placeable node at all, the clean-up still happens. */
    cl_add(&c, 6, 0, 1, true, false);
    for (int j = 0; j < 3; j++)
        c.nodes[j].state = NODE_OFFLINE;
    v = cl_view(&c);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 1);
    cr_assert_eq(r.moves[0].monitor_id, 6);
    cr_assert_eq(r.n_inactive_cleared, 1);

    /* Every move of a running monitor is guarded on active = 1. */
    c.nodes[0].state = NODE_ONLINE;
    cl_add(&c, 7, 1, -1, false, true);
    v = cl_view(&c);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    for (size_t k = 0; k < r.n_moves; k++)
        cr_assert_eq(r.moves[k].expect_active, r.moves[k].monitor_id == 6 ? 0 : 1);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, adoption_levels_the_least_loaded_with_node_id_tie_break)
{
    cluster c;
    static const char *const ids[] = {"n-c", "n-a", "n-b"}; /* listed out of id order */
    cl_init(&c, 3, ids, 1000);
    int64_t id = 1;
    for (int i = 0; i < 3; i++)
        cl_add(&c, id++, 0, -1, false, true); /* n-c: 3 */
    for (int i = 0; i < 3; i++)
        cl_add(&c, id++, 1, -1, false, true); /* n-a: 3 */
    for (int i = 0; i < 5; i++)
        cl_add(&c, id++, 2, -1, false, true); /* n-b: 5 */
    for (int i = 0; i < 5; i++)
        cl_add(&c, id++, -1, -1, false, true);
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_adopt, 5);
    cr_assert_eq(r.n_moves, 5);
    for (int k = 0; k < 5; k++) {
        cr_assert_eq(r.moves[k].kind, MOVE_SET_HOME);
        cr_assert_eq(r.moves[k].expect_home, -1);
    }
    cl_apply(&c, &r);
    /* 3,3,5 + 5: n-a and n-c rise to 5, the one left over goes to the lower id, n-a */
    cr_assert_eq(cl_load(&c, 1), 6, "n-a");
    cr_assert_eq(cl_load(&c, 0), 5, "n-c");
    cr_assert_eq(cl_load(&c, 2), 5, "n-b");
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, no_placeable_node_moves_nothing_and_counts_waiting_monitors)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    c.nodes[0].state = NODE_OFFLINE;
    c.nodes[1].state = NODE_DRAINING;
    c.nodes[2].state = NODE_RECOVERING;
    cl_add(&c, 1, 0, -1, false, true);
    cl_add(&c, 2, 1, -1, false, true); /* on draining: nowhere else to go, stays */
    cl_add(&c, 3, -1, -1, false, true);
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    cr_assert_eq(r.n_no_target, 3);
    /* The planner does not latch: once a node is placeable the same view converges. */
    c.nodes[2].state = NODE_ONLINE;
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 3);
    cr_assert_eq(r.n_no_target, 0);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, draining_node_hands_its_monitors_over_suspect_keeps_them)
{
    cluster c;
    three_by_hundred(&c, 1000);
    c.nodes[0].state = NODE_SUSPECT;  /* still placeable: nothing moves off it */
    c.nodes[1].state = NODE_DRAINING;
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_failover, 100);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 1), 0);
    cr_assert_eq(cl_load(&c, 0) + cl_load(&c, 2), 300);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, full_cluster_still_places_and_counts_over_capacity)
{
    cluster c;
    three_by_hundred(&c, 120); /* 20 free on each survivor, 100 to place */
    c.nodes[1].state = NODE_OFFLINE;
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_failover, 100);
    cr_assert_eq(r.n_over_capacity, 60);
    cr_assert_eq(r.n_no_target, 0);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 150, "over the limit, spread evenly");
    cr_assert_eq(cl_load(&c, 2), 150);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, capacity_respected_with_uneven_limits)
{
    cluster c;
    three_by_hundred(&c, 1000);
    c.nodes[0].limit = 110; /* node1 can take only 10 more */
    c.nodes[1].state = NODE_OFFLINE;
    plan_view v = cl_view(&c);
    plan_options o = opts(500, 0.1);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cr_assert_eq(r.n_over_capacity, 0);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 110);
    cr_assert_eq(cl_load(&c, 2), 190);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, revert_never_pushes_home_over_its_limit)
{
    cluster c;
    cl_init(&c, 2, three, 3);
    for (int i = 1; i <= 5; i++)
        cl_add(&c, i, 0, 1, true, true); /* 5 of ours on node2, home node1 (limit 3) */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_revert, 3);
    cr_assert_not(r.reverts_truncated, "a full home is not a truncated batch");
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 3);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_converge, same_placement_whatever_the_node_order)
{
    static const char *const a[] = {"alpha", "bravo", "charlie", "delta"};
    static const char *const b[] = {"delta", "bravo", "alpha", "charlie"};
    const int map[] = {2, 1, 3, 0}; /* index in a -> index in b */
    cluster ca, cb;
    cl_init(&ca, 4, a, 1000);
    cl_init(&cb, 4, b, 1000);
    for (int i = 1; i <= 400; i++) {
        cl_add(&ca, i * 7, (i - 1) % 4, -1, false, true);
        cl_add(&cb, i * 7, map[(i - 1) % 4], -1, false, true);
    }
    ca.nodes[1].state = NODE_OFFLINE;
    cb.nodes[map[1]].state = NODE_OFFLINE;
    plan_view va = cl_view(&ca), vb = cl_view(&cb);
    plan_result ra, rb;
    plan_result_init(&ra);
    plan_result_init(&rb);
    cr_assert_eq(plan_converge(&va, NULL, &ra), 0);
    cr_assert_eq(plan_converge(&vb, NULL, &rb), 0);
    cr_assert_eq(ra.n_moves, 100);
    cr_assert_eq(rb.n_moves, ra.n_moves);
    for (size_t k = 0; k < ra.n_moves; k++) {
        cr_assert_eq(ra.moves[k].monitor_id, rb.moves[k].monitor_id);
        cr_assert_str_eq(ca.ids[ra.moves[k].to], cb.ids[rb.moves[k].to]);
    }
    plan_result_free(&ra);
    plan_result_free(&rb);
    cl_free(&ca);
    cl_free(&cb);
}

Test(assign_converge, second_failure_moves_only_the_monitors_of_the_dead_node)
{
    static const char *const four[] = {"node1", "node2", "node3", "node4"};
    cluster c;
    cl_init(&c, 4, four, 1000);
    for (int i = 1; i <= 400; i++)
        cl_add(&c, i, (i - 1) % 4, -1, false, true);
    c.nodes[1].state = NODE_OFFLINE;
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cl_apply(&c, &r);
    int on_node3 = cl_load(&c, 2);
    c.nodes[2].state = NODE_OFFLINE;
    cr_assert_eq(plan_converge(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, (size_t)on_node3, "exactly node3's monitors move, no churn");
    for (size_t k = 0; k < r.n_moves; k++)
        cr_assert_eq(plan_effective(&c.mon[r.moves[k].monitor_index]), 2);
    plan_result_free(&r);
    cl_free(&c);
}

/* ------------------------------------------------------------------------------------------ */

Test(assign_rebalance, skew_is_fixed_with_the_minimum_number_of_home_changes)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    int64_t id = 1;
    for (int i = 0; i < 200; i++)
        cl_add(&c, id++, 0, -1, false, true);
    for (int i = 0; i < 100; i++)
        cl_add(&c, id++, 1, -1, false, true);
    plan_view v = cl_view(&c);
    plan_options o = opts(500, 0.1); /* mean 100: band [90, 110] */
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_rebalance(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 90, "excess 90 over 110 on node1 = deficit 90 under 90 on node3");
    cr_assert_eq(r.n_rebalance, 90);
    for (size_t k = 0; k < r.n_moves; k++) {
        cr_assert_eq(r.moves[k].kind, MOVE_SET_HOME);
        cr_assert_eq(r.moves[k].expect_home, 0);
        cr_assert_eq(r.moves[k].to, 2);
        cr_assert_eq(r.moves[k].clear_override, 0);
    }
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 110);
    cr_assert_eq(cl_load(&c, 1), 100);
    cr_assert_eq(cl_load(&c, 2), 90);
    /* Balanced now: another rebalance changes nothing. */
    cr_assert_eq(plan_rebalance(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_rebalance, excess_spreads_over_the_least_loaded)
{
    static const char *const five[] = {"a", "b", "c", "d", "e"};
    cluster c;
    cl_init(&c, 5, five, 1000);
    int64_t id = 1;
    for (int i = 0; i < 140; i++)
        cl_add(&c, id++, 0, -1, false, true);
    for (int j = 1; j < 5; j++)
        for (int i = 0; i < 90; i++)
            cl_add(&c, id++, j, -1, false, true);
    /* total 500, mean 100, band [90, 110]: node a has 30 too many, nobody is short */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_rebalance(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 30);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 110);
    for (int j = 1; j < 5; j++) {
        cr_assert_geq(cl_load(&c, j), 97, "levelled, not dumped on one node");
        cr_assert_leq(cl_load(&c, j), 98);
    }
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_rebalance, pins_and_overrides_stay_and_limit_movement)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    int64_t id = 1;
    for (int i = 0; i < 100; i++)
        cl_add(&c, id++, 1, 0, false, true); /* pinned to node1 */
    for (int i = 0; i < 50; i++)
        cl_add(&c, id++, 2, 0, true, true);  /* our failover override on node1 */
    for (int i = 0; i < 50; i++)
        cl_add(&c, id++, 0, -1, false, true); /* plain: the only movable ones */
    cl_add(&c, id++, 0, -1, false, false);    /* inactive: not load, not moved */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_rebalance(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 50);
    for (size_t k = 0; k < r.n_moves; k++) {
        const plan_monitor *m = &c.mon[r.moves[k].monitor_index];
        cr_assert_eq(m->over, -1);
        cr_assert(m->active);
    }
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_rebalance, a_small_limit_shifts_the_share_to_the_others)
{
    cluster c;
    cl_init(&c, 3, three, 1000);
    c.nodes[2].limit = 50;
    for (int i = 1; i <= 300; i++)
        cl_add(&c, i, 0, -1, false, true);
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_rebalance(&v, NULL, &r), 0);
    /* hi of node1/node2 rises to 125 so 300 fit; node3 takes its 50 */
    cr_assert_eq(r.n_moves, 175);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 125);
    cr_assert_eq(cl_load(&c, 1), 125);
    cr_assert_eq(cl_load(&c, 2), 50);
    plan_result_free(&r);
    cl_free(&c);
}

Test(assign_rebalance, ignores_nodes_that_are_not_placeable)
{
    cluster c;
    three_by_hundred(&c, 1000);
    c.nodes[2].state = NODE_MAINTENANCE;
    for (int i = 301; i <= 340; i++)
        cl_add(&c, i, 0, -1, false, true); /* node1 140, node2 100: band of 120 is [108, 132] */
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_rebalance(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 8);
    for (size_t k = 0; k < r.n_moves; k++)
        cr_assert_eq(r.moves[k].to, 1);
    plan_result_free(&r);
    cl_free(&c);
}

/* ------------------------------------------------------------------------------------------ */

Test(assign_force, recomputes_from_scratch_and_is_idempotent)
{
    cluster a, b;
    static const char *const four[] = {"node1", "node2", "node3", "node4"};
    cl_init(&a, 4, four, 1000);
    cl_init(&b, 4, four, 1000);
    for (int i = 1; i <= 1000; i++) {
        /* same monitors, different starting homes and overrides */
        cl_add(&a, i, 0, -1, false, true);
        bool ours = i % 5 == 0;
        cl_add(&b, i, i % 3 == 0 ? -1 : (i % 4), ours ? 3 : -1, ours, true);
    }
    cl_add(&a, 1001, 2, 1, false, true); /* a pin: stays, counts as load */
    cl_add(&b, 1001, 2, 1, false, true);
    plan_view va = cl_view(&a), vb = cl_view(&b);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_force_all(&va, NULL, &r), 0);
    cl_apply(&a, &r);
    cr_assert_eq(plan_force_all(&vb, NULL, &r), 0);
    for (size_t k = 0; k < r.n_moves; k++) {
        const plan_monitor *m = &b.mon[r.moves[k].monitor_index];
        cr_assert_eq(r.moves[k].clear_override, m->over >= 0 ? 1 : 0);
        cr_assert_neq(m->id, 1001, "pins are never moved");
    }
    cl_apply(&b, &r);
    for (size_t i = 0; i < a.n; i++) {
        cr_assert_eq(a.mon[i].home, b.mon[i].home, "monitor %lld", (long long)a.mon[i].id);
        cr_assert_eq(a.mon[i].over, b.mon[i].over);
    }
    cr_assert_eq(a.mon[1000].over, 1);
    /* Even: 1,001 with the pin on node2 -> node1 251 (lower id takes the remainder), the rest
     * 250 each. */
    cr_assert_eq(cl_load(&a, 0), 251);
    for (int j = 1; j < 4; j++)
        cr_assert_eq(cl_load(&a, j), 250, "node%d", j + 1);
    /* Already in place: nothing moves. */
    cr_assert_eq(plan_force_all(&va, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    plan_result_free(&r);
    cl_free(&a);
    cl_free(&b);
}

Test(assign_force, no_placeable_node_moves_nothing)
{
    cluster c;
    three_by_hundred(&c, 1000);
    for (int j = 0; j < 3; j++)
        c.nodes[j].state = NODE_OFFLINE;
    plan_view v = cl_view(&c);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_force_all(&v, NULL, &r), 0);
    cr_assert_eq(r.n_moves, 0);
    cr_assert_eq(r.n_no_target, 300);
    plan_result_free(&r);
    cl_free(&c);
}

/* ---- nodes marked `keep` (unproven after a start; held by the panic guard) ------------ */

/* An online node kumaguard has not proven yet keeps what it runs and gets nothing new, not
 * even the monitors of a node that died. */
Test(assign_keep, an_unproven_node_keeps_its_monitors_and_gets_none)
{
    cluster c;
    three_by_hundred(&c, 1000);
    c.nodes[1].state = NODE_OFFLINE;
    c.nodes[2].keep = true; /* online, not yet proven */
    plan_view v = cl_view(&c);
    plan_options o = opts(100, 0.1);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 2), 100, "node3's own monitors stay, none added");
    cr_assert_eq(cl_load(&c, 0), 200, "node2's go to the one proven node");
    plan_result_free(&r);
    cl_free(&c);
}

/* A failing node the panic guard holds keeps its monitors: nothing moves off it. */
Test(assign_keep, a_held_offline_node_keeps_its_monitors)
{
    cluster c;
    three_by_hundred(&c, 1000);
    c.nodes[0].state = NODE_OFFLINE;
    c.nodes[1].state = NODE_OFFLINE;
    c.nodes[0].keep = true;
    c.nodes[1].keep = true;
    plan_view v = cl_view(&c);
    plan_options o = opts(100, 0.1);
    plan_result r;
    plan_result_init(&r);
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cr_assert_eq(r.n_moves, 0, "held: no failover");
    c.nodes[1].keep = false; /* released (operator override or max hold) */
    cr_assert_eq(plan_converge(&v, &o, &r), 0);
    cl_apply(&c, &r);
    cr_assert_eq(cl_load(&c, 0), 100, "still held");
    cr_assert_eq(cl_load(&c, 1), 0, "released: failed over");
    cr_assert_eq(cl_load(&c, 2), 200);
    plan_result_free(&r);
    cl_free(&c);
}
