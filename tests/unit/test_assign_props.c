/* test_assign_props.c — property tests of the assignment planner over thousands of seeded
 * random clusters and random sequences of failures, recoveries, drains, limit changes, new
 * monitors, rebalances and force-rebalances.
 *
 * The test keeps its own model of the `monitor` table, applies every plan to it the way a
 * database does (a row changes only if it still has the expected home and override), sometimes
 * lets a "Kuma node" edit or delete rows between planning and applying, and after every step
 * checks SPEC section 3's invariants 1-5, determinism (same input twice; nodes listed in another
 * order), the number of moves against the minimum it computes itself, and even placement: the
 * loads a plan leaves must be exactly those of placing its monitors one at a time on the least
 * loaded node with room (ties to the lower node id), a model written here independently of
 * assign.c's water-filling.  A failing check names the seed so the case can be replayed. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assign.h"

#define MAXN 50

/* ======================================================================================== */
/* Random numbers and the model                                                             */
/* ======================================================================================== */

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int rnd_int(uint64_t *s, int n) /* [0, n) */
{
    return n <= 0 ? 0 : (int)(rnd(s) % (uint64_t)n);
}

static bool chance(uint64_t *s, double p)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0 < p;
}

typedef struct {
    int n_nodes;
    plan_node nodes[MAXN];
    char ids[MAXN][24];
    plan_monitor *mon;
    size_t n_mon, cap_mon;
    int64_t next_id;
    uint64_t seed;  /* for messages */
    int step;
} model;

/* Totals over a whole test, printed at the end. */
typedef struct {
    long long failover_moves, failover_min;
    long long rebalance_moves, rebalance_min, rebalance_resolved;
    long long rebalance_runs, rebalance_exact_runs, rebalance_limited_runs;
    long long adopt_moves, revert_moves, force_moves, force_runs;
    long long steps, guard_skips, shuffles;
    long long over_capacity;
} stats;

static plan_view view_of(const model *m)
{
    return (plan_view){.nodes = m->nodes, .n_nodes = m->n_nodes, .monitors = m->mon,
                       .n_monitors = m->n_mon};
}

static void model_push(model *m, plan_monitor x)
{
    if (m->n_mon == m->cap_mon) {
        m->cap_mon = m->cap_mon ? m->cap_mon * 2 : 64;
        m->mon = realloc(m->mon, m->cap_mon * sizeof(plan_monitor));
        cr_assert_not_null(m->mon);
    }
    m->mon[m->n_mon++] = x;
}

static const node_state state_pool[] = {
    NODE_ONLINE, NODE_ONLINE, NODE_ONLINE, NODE_ONLINE, NODE_ONLINE, NODE_ONLINE,
    NODE_ONLINE, NODE_SUSPECT, NODE_OFFLINE, NODE_OFFLINE, NODE_RECOVERING,
    NODE_DRAINING, NODE_MAINTENANCE, NODE_UNKNOWN,
};

static void random_node_state(model *m, uint64_t *s, int j)
{
    m->nodes[j].state = state_pool[rnd_int(s, (int)(sizeof(state_pool) / sizeof(state_pool[0])))];
    m->nodes[j].revert_ok = m->nodes[j].state == NODE_ONLINE && chance(s, 0.6);
}

static int random_limit(uint64_t *s, size_t n_mon, int n_nodes)
{
    if (chance(s, 0.65))
        return 1000000;
    double mean = (double)n_mon / (n_nodes ? n_nodes : 1);
    return (int)(mean * (0.6 + 1.2 * (double)rnd_int(s, 1000) / 1000.0)) + rnd_int(s, 3);
}

static plan_monitor random_monitor(model *m, uint64_t *s, double p_pin, double p_ours)
{
    plan_monitor x = {.id = m->next_id, .home = -1, .over = -1, .active = 1, .ours = 0};
    m->next_id += 1 + rnd_int(s, 3);
    if (!chance(s, 0.03))
        x.home = rnd_int(s, m->n_nodes);
    if (chance(s, p_pin)) {
        x.over = rnd_int(s, m->n_nodes);
    } else if (chance(s, p_ours)) {
        x.over = rnd_int(s, m->n_nodes);
        x.ours = 1;
    }
    x.active = chance(s, 0.9) ? 1 : 0;
    return x;
}

/* Clusters mix shapes of node ids (not just nodeN) and weights of pins and overrides. */
static void model_random(model *m, uint64_t seed, int n_nodes, size_t n_mon)
{
    uint64_t s = seed;
    memset(m, 0, sizeof(*m));
    m->seed = seed;
    m->n_nodes = n_nodes;
    m->next_id = 1 + rnd_int(&s, 50);
    for (int j = 0; j < n_nodes; j++) {
        switch (rnd_int(&s, 3)) {
        case 0: snprintf(m->ids[j], sizeof(m->ids[j]), "node%d", j + 1); break;
        case 1: snprintf(m->ids[j], sizeof(m->ids[j]), "kuma-%c%02d", 'a' + rnd_int(&s, 26), j); break;
        default: snprintf(m->ids[j], sizeof(m->ids[j]), "%x-%d", (unsigned)rnd(&s) & 0xfff, j); break;
        }
        m->nodes[j].id = m->ids[j];
        random_node_state(m, &s, j);
        m->nodes[j].limit = random_limit(&s, n_mon, n_nodes);
    }
    if (chance(&s, 0.2))
        for (int j = 0; j < n_nodes; j++)
            m->nodes[j].limit = 1000000;
    double p_pin = chance(&s, 0.3) ? 0.0 : 0.05 * (double)rnd_int(&s, 3);
    double p_ours = chance(&s, 0.3) ? 0.0 : 0.05 * (double)rnd_int(&s, 4);
    for (size_t i = 0; i < n_mon; i++)
        model_push(m, random_monitor(m, &s, p_pin, p_ours));
}

static void model_free(model *m)
{
    free(m->mon);
    m->mon = NULL;
}

/* ======================================================================================== */
/* Facts about a table                                                                      */
/* ======================================================================================== */

static bool pinned(const plan_monitor *x)
{
    return x->over >= 0 && !x->ours;
}

static bool placeable(const model *m, int j)
{
    return j >= 0 && node_state_placeable(m->nodes[j].state);
}

static int n_placeable(const model *m)
{
    int p = 0;
    for (int j = 0; j < m->n_nodes; j++)
        p += placeable(m, j);
    return p;
}

static void loads_of(const model *m, const plan_monitor *mon, size_t n, int *load)
{
    memset(load, 0, sizeof(int) * MAXN);
    for (size_t i = 0; i < n; i++) {
        int e = plan_effective(&mon[i]);
        if (mon[i].active && e >= 0)
            load[e]++;
    }
}

static int limit_of(const model *m, int j)
{
    return m->nodes[j].limit > 0 ? m->nodes[j].limit : 0;
}

static bool all_placeable_at_least(const model *m, const int *load, const int *bound)
{
    for (int j = 0; j < m->n_nodes; j++)
        if (placeable(m, j) && load[j] < bound[j])
            return false;
    return true;
}

/* The even-placement model: k monitors placed one at a time, each on the least loaded
 * placeable node with room under its limit (ties: lower node id), or when every node is full on
 * the least loaded one.  Updates load[]; returns how many went over a limit. */
static int place_one_by_one(const model *m, int *load, long long k)
{
    int over = 0;
    for (long long q = 0; q < k; q++) {
        int best = -1;
        bool any_room = false;
        for (int j = 0; j < m->n_nodes; j++)
            any_room |= placeable(m, j) && load[j] < limit_of(m, j);
        for (int j = 0; j < m->n_nodes; j++) {
            if (!placeable(m, j) || (any_room && load[j] >= limit_of(m, j)))
                continue;
            if (best < 0 || load[j] < load[best] ||
                (load[j] == load[best] && strcmp(m->ids[j], m->ids[best]) < 0))
                best = j;
        }
        cr_assert_geq(best, 0);
        over += !any_room;
        load[best]++;
    }
    return over;
}

/* Evenness stated directly: no node received a monitor while another placeable node with
 * room under its limit ended more than one below it (water-filling's defining property). */
static void check_level(const model *m, const int *load, const int *received, const char *what,
                        const char *op_name)
{
    for (int a = 0; a < m->n_nodes; a++) {
        if (!placeable(m, a) || !received[a])
            continue;
        for (int b = 0; b < m->n_nodes; b++)
            if (placeable(m, b) && load[b] < limit_of(m, b))
                cr_assert_leq(load[a], load[b] + 1,
                              "seed %llu step %d %s: %s not even: node %s at %d received, "
                              "node %s with room at %d", (unsigned long long)m->seed, m->step,
                              op_name, what, m->ids[a], load[a], m->ids[b], load[b]);
    }
}

/* The tolerance band per node, computed independently of assign.c: mean of the load on
 * placeable nodes, hi = max(ceil(mean), floor(mean*(1+tol))), lo = min(floor(mean),
 * ceil(mean*(1-tol))); hi is cut to the node's limit and, when small limits leave the rest too
 * little room, raised one step at a time until everything fits (or to the limits). */
static void band_of(const model *m, const int *load, double tol, int *lo, int *hi)
{
    int p = n_placeable(m);
    long long total = 0, sum_limit = 0;
    for (int j = 0; j < m->n_nodes; j++)
        if (placeable(m, j)) {
            total += load[j];
            sum_limit += limit_of(m, j);
        }
    double mean = (double)total / p;
    long long cm = (total + p - 1) / p, fm = total / p;
    long long B = (long long)floor(mean * (1 + tol) + 1e-9);
    if (B < cm)
        B = cm;
    long long L = (long long)ceil(mean * (1 - tol) - 1e-9);
    if (L > fm)
        L = fm;
    if (L < 0)
        L = 0;
    for (;;) {
        long long fit = 0, maxl = 0;
        for (int j = 0; j < m->n_nodes; j++)
            if (placeable(m, j)) {
                fit += limit_of(m, j) < B ? limit_of(m, j) : B;
                if (limit_of(m, j) > maxl)
                    maxl = limit_of(m, j);
            }
        if (fit >= total || B >= maxl || sum_limit <= total) {
            if (fit < total)
                B = maxl;
            break;
        }
        B++;
    }
    for (int j = 0; j < m->n_nodes; j++) {
        hi[j] = (int)(limit_of(m, j) < B ? limit_of(m, j) : B);
        lo[j] = (int)(L < hi[j] ? L : hi[j]);
    }
}

/* ======================================================================================== */
/* Applying a plan like a database does                                                     */
/* ======================================================================================== */

typedef enum { OP_CONVERGE, OP_REBALANCE, OP_FORCE } op_kind;
static const char *const op_names[] = {"converge", "rebalance", "force"};

static int run_plan(op_kind op, const plan_view *v, const plan_options *o, plan_result *r)
{
    switch (op) {
    case OP_CONVERGE: return plan_converge(v, o, r);
    case OP_REBALANCE: return plan_rebalance(v, o, r);
    case OP_FORCE: return plan_force_all(v, o, r);
    }
    return -1;
}

/* Guarded UPDATE: ... WHERE id = ? AND active = ? AND node_id <=> ? AND assigned_node <=> ?. */
static bool apply_one(plan_monitor *x, const plan_move *mv)
{
    if (x->active != mv->expect_active || x->home != mv->expect_home ||
        x->over != mv->expect_over)
        return false;
    switch (mv->kind) {
    case MOVE_SET_OVERRIDE:
        x->over = mv->to;
        x->ours = 1;
        break;
    case MOVE_CLEAR_OVERRIDE:
        x->over = -1;
        x->ours = 0;
        break;
    case MOVE_SET_HOME:
        x->home = mv->to;
        if (mv->clear_override) {
            x->over = -1;
            x->ours = 0;
        }
        break;
    }
    return true;
}

static bool same_moves(const plan_result *a, const plan_result *b)
{
    if (a->n_moves != b->n_moves || a->n_failover != b->n_failover ||
        a->n_revert != b->n_revert || a->n_adopt != b->n_adopt ||
        a->n_rebalance != b->n_rebalance || a->n_over_capacity != b->n_over_capacity ||
        a->n_no_target != b->n_no_target || a->n_pinned_stranded != b->n_pinned_stranded ||
        a->reverts_truncated != b->reverts_truncated)
        return false;
    for (size_t k = 0; k < a->n_moves; k++) {
        const plan_move *x = &a->moves[k], *y = &b->moves[k];
        if (x->monitor_id != y->monitor_id || x->monitor_index != y->monitor_index ||
            x->kind != y->kind || x->clear_override != y->clear_override || x->to != y->to ||
            x->expect_home != y->expect_home || x->expect_over != y->expect_over)
            return false;
    }
    return true;
}

static const char *name_or_null(const model *m, int j)
{
    return j >= 0 ? m->ids[j] : "(null)";
}

/* Lists the nodes in a random other order (monitors re-indexed) and checks the plan is the
 * same plan in terms of node ids. */
static void check_node_order_irrelevant(const model *m, op_kind op, const plan_options *o,
                                        const plan_result *r, uint64_t *s)
{
    model sh = *m;
    int perm[MAXN]; /* old index -> new index */
    for (int j = 0; j < m->n_nodes; j++)
        perm[j] = j;
    for (int j = m->n_nodes - 1; j > 0; j--) {
        int k = rnd_int(s, j + 1), t = perm[j];
        perm[j] = perm[k];
        perm[k] = t;
    }
    for (int j = 0; j < m->n_nodes; j++) {
        memcpy(sh.ids[perm[j]], m->ids[j], sizeof(sh.ids[0]));
        sh.nodes[perm[j]] = m->nodes[j];
    }
    for (int j = 0; j < m->n_nodes; j++)
        sh.nodes[j].id = sh.ids[j];
    sh.mon = malloc((m->n_mon ? m->n_mon : 1) * sizeof(plan_monitor));
    cr_assert_not_null(sh.mon);
    for (size_t i = 0; i < m->n_mon; i++) {
        sh.mon[i] = m->mon[i];
        if (sh.mon[i].home >= 0)
            sh.mon[i].home = perm[sh.mon[i].home];
        if (sh.mon[i].over >= 0)
            sh.mon[i].over = perm[sh.mon[i].over];
    }
    plan_view v = view_of(&sh);
    plan_result r2;
    plan_result_init(&r2);
    cr_assert_eq(run_plan(op, &v, o, &r2), 0);
    cr_assert_eq(r2.n_moves, r->n_moves, "seed %llu step %d %s: node order changed the plan",
                 (unsigned long long)m->seed, m->step, op_names[op]);
    for (size_t k = 0; k < r->n_moves; k++) {
        const plan_move *x = &r->moves[k], *y = &r2.moves[k];
        cr_assert(x->monitor_id == y->monitor_id && x->kind == y->kind &&
                      x->clear_override == y->clear_override &&
                      strcmp(name_or_null(m, x->to), name_or_null(&sh, y->to)) == 0 &&
                      strcmp(name_or_null(m, x->expect_home), name_or_null(&sh, y->expect_home)) == 0 &&
                      strcmp(name_or_null(m, x->expect_over), name_or_null(&sh, y->expect_over)) == 0,
                  "seed %llu step %d %s: move %zu differs with nodes reordered",
                  (unsigned long long)m->seed, m->step, op_names[op], k);
    }
    plan_result_free(&r2);
    free(sh.mon);
}

/* ======================================================================================== */
/* Checks                                                                                   */
/* ======================================================================================== */

#define CTX "seed %llu step %d %s: "
#define CTXA (unsigned long long)m->seed, m->step, op_names[op]

/* Every move is well formed, touches a monitor at most once, carries the row's values as its
 * guard, never touches a pin, touches an inactive monitor only to clear our override, and
 * targets a placeable node. */
static void check_moves_wellformed(const model *m, op_kind op, const plan_result *r,
                                   uint8_t *seen)
{
    memset(seen, 0, m->n_mon ? m->n_mon : 1);
    for (size_t k = 0; k < r->n_moves; k++) {
        const plan_move *mv = &r->moves[k];
        cr_assert_lt(mv->monitor_index, m->n_mon, CTX "bad index", CTXA);
        const plan_monitor *x = &m->mon[mv->monitor_index];
        cr_assert_eq(x->id, mv->monitor_id, CTX "index/id mismatch", CTXA);
        cr_assert_not(seen[mv->monitor_index], CTX "monitor %lld moved twice", CTXA,
                      (long long)x->id);
        seen[mv->monitor_index] = 1;
        cr_assert_eq(mv->expect_home, x->home, CTX "guard home", CTXA);
        cr_assert_eq(mv->expect_over, x->over, CTX "guard override", CTXA);
        cr_assert_eq(mv->expect_active, x->active, CTX "guard active", CTXA);
        cr_assert_not(pinned(x), CTX "pinned monitor %lld moved", CTXA, (long long)x->id);
        if (!x->active) {
            cr_assert(op == OP_CONVERGE && mv->kind == MOVE_CLEAR_OVERRIDE && x->ours,
                      CTX "inactive monitor %lld moved", CTXA, (long long)x->id);
        } else if (mv->kind == MOVE_CLEAR_OVERRIDE) {
            cr_assert_geq(x->over, 0, CTX "clearing an absent override", CTXA);
            cr_assert(placeable(m, x->home), CTX "override cleared towards a dead home", CTXA);
        } else {
            cr_assert(mv->kind == MOVE_SET_OVERRIDE || mv->kind == MOVE_SET_HOME);
            cr_assert(placeable(m, mv->to), CTX "move to a non-placeable node %d", CTXA, mv->to);
        }
        if (k > 0 && op != OP_CONVERGE)
            cr_assert_gt(mv->monitor_id, r->moves[k - 1].monitor_id, CTX "order", CTXA);
    }
}

/* Converge: invariants 2-5 plus exact minimal movement.  `before` is the table the plan saw. */
static void check_converge(const model *m, const plan_monitor *before, const plan_options *o,
                           const plan_result *r, stats *st)
{
    const op_kind op = OP_CONVERGE;
    int p = n_placeable(m);
    int need_fail = 0, need_adopt = 0, stranded = 0;
    for (size_t i = 0; i < m->n_mon; i++) {
        const plan_monitor *x = &before[i];
        if (!x->active)
            continue;
        if (pinned(x)) {
            stranded += !node_state_routable(m->nodes[x->over].state);
            continue;
        }
        int e = plan_effective(x);
        if (e < 0)
            need_adopt++;
        else if (!placeable(m, e))
            need_fail++;
    }
    cr_assert_eq(r->n_pinned_stranded, stranded, CTX "stranded pins", CTXA);
    if (p == 0) {
        cr_assert_eq(r->n_moves, (size_t)r->n_inactive_cleared,
                     CTX "moves with no placeable node", CTXA);
        cr_assert_eq(r->n_no_target, need_fail + need_adopt, CTX "n_no_target", CTXA);
        return;
    }
    cr_assert_eq(r->n_no_target, 0, CTX, CTXA);
    /* Invariant 4 (minimal movement): exactly the monitors that must move, move. */
    cr_assert_eq(r->n_failover, need_fail, CTX "failover count vs minimum", CTXA);
    cr_assert_eq(r->n_adopt, need_adopt, CTX "adoption count", CTXA);
    cr_assert_eq(r->n_moves, (size_t)(r->n_failover + r->n_adopt + r->n_revert +
                                      r->n_inactive_cleared), CTX, CTXA);
    st->failover_moves += r->n_failover;
    st->failover_min += need_fail;
    st->adopt_moves += r->n_adopt;
    st->revert_moves += r->n_revert;
    st->over_capacity += r->n_over_capacity;

    /* Invariant 2: every active unpinned monitor now runs on a placeable node. */
    for (size_t i = 0; i < m->n_mon; i++) {
        const plan_monitor *x = &m->mon[i];
        if (x->active && !pinned(x))
            cr_assert(placeable(m, plan_effective(x)), CTX "monitor %lld on node %d not placeable",
                      CTXA, (long long)x->id, plan_effective(x));
    }

    /* Replay the moves in order on a load array: clean-ups of inactive monitors first (no
     * load), then reverts (only to a home with room, within the batch), then failover, then
     * adoption.  Failover and adoption are checked against the one-by-one placement model:
     * our overrides going home first (lowest id first, while the home has room), then the rest
     * placed evenly. */
    int load[MAXN], lim[MAXN], received[MAXN] = {0}, placed[MAXN] = {0};
    loads_of(m, before, m->n_mon, load);
    for (int j = 0; j < m->n_nodes; j++)
        lim[j] = limit_of(m, j);
    int phase = -1, paid_reverts = 0, inactive = 0, want_inactive = 0;
    for (size_t i = 0; i < m->n_mon; i++)
        want_inactive += !before[i].active && before[i].over >= 0 && before[i].ours;
    int model_load[MAXN], model_over = 0;
    long long to_place = 0;
    for (size_t k = 0; k < r->n_moves; k++) {
        const plan_move *mv = &r->moves[k];
        const plan_monitor *x = &before[mv->monitor_index];
        if (!x->active) {
            cr_assert_eq(phase, -1, CTX "inactive clean-ups come first", CTXA);
            cr_assert_eq(mv->kind, MOVE_CLEAR_OVERRIDE, CTX, CTXA);
            cr_assert_eq(mv->expect_active, 0, CTX, CTXA);
            cr_assert(x->over >= 0 && x->ours, CTX "clean-up of a pin", CTXA);
            inactive++;
            continue;
        }
        cr_assert_eq(mv->expect_active, 1, CTX "guard on active", CTXA);
        int from = plan_effective(x);
        int to = mv->kind == MOVE_CLEAR_OVERRIDE ? x->home : mv->to;
        int this_phase = (from >= 0 && placeable(m, from)) ? 0 : from >= 0 ? 1 : 2;
        cr_assert_geq(this_phase, phase, CTX "reverts, failover, adoption in that order", CTXA);
        bool home_revert = this_phase == 1 && mv->kind == MOVE_CLEAR_OVERRIDE &&
                           m->nodes[x->home].revert_ok && o->revert_batch > 0 &&
                           load[x->home] < lim[x->home];
        if (this_phase != phase && phase >= 1) {
            /* the placements of the phase just finished must equal the model's */
            model_over += place_one_by_one(m, model_load, to_place);
            for (int j = 0; j < m->n_nodes; j++)
                if (placeable(m, j))
                    cr_assert_eq(load[j], model_load[j], CTX "failover not even: node %s "
                                 "has %d, one-by-one placement gives %d", CTXA, m->ids[j],
                                 load[j], model_load[j]);
            check_level(m, load, placed, "failover", op_names[op]);
            memset(placed, 0, sizeof(placed));
        }
        if (this_phase != phase && this_phase >= 1) {
            memcpy(model_load, load, sizeof(load));
            to_place = 0;
        }
        phase = this_phase;
        if (phase == 0) {
            cr_assert_eq(mv->kind, MOVE_CLEAR_OVERRIDE, CTX, CTXA);
            cr_assert(x->ours && m->nodes[x->home].revert_ok, CTX "revert not allowed", CTXA);
            if (to != from) {
                paid_reverts++;
                cr_assert_lt(load[to], lim[to], CTX "revert over the home's limit", CTXA);
            }
        } else if (home_revert) {
            /* Goes home: ahead of the even placement, and only into room. */
            cr_assert_eq(to_place, 0, CTX "moves home come before the even placement", CTXA);
            model_load[to]++;
        } else {
            if (phase == 2)
                cr_assert_eq(mv->kind, MOVE_SET_HOME, CTX, CTXA);
            to_place++;
            placed[to]++;
        }
        if (from >= 0)
            load[from]--;
        load[to]++;
        if (from >= 0 && phase >= 1)
            model_load[from]--;
        received[to] += to != from; /* a free revert (override == home) brings nothing */
    }
    if (phase >= 1) {
        model_over += place_one_by_one(m, model_load, to_place);
        for (int j = 0; j < m->n_nodes; j++)
            if (placeable(m, j))
                cr_assert_eq(load[j], model_load[j], CTX "%s not even: node %s has %d, "
                             "one-by-one placement gives %d", CTXA,
                             phase == 1 ? "failover" : "adoption", m->ids[j], load[j],
                             model_load[j]);
        check_level(m, load, placed, phase == 1 ? "failover" : "adoption", op_names[op]);
    }
    cr_assert_eq(inactive, want_inactive, CTX "inactive clean-ups", CTXA);
    cr_assert_eq(r->n_inactive_cleared, want_inactive, CTX, CTXA);
    cr_assert_leq(paid_reverts, o->revert_batch, CTX "revert batch exceeded", CTXA);
    if (r->reverts_truncated)
        cr_assert_eq(paid_reverts, o->revert_batch, CTX "truncated below the batch", CTXA);
    cr_assert_eq(model_over, r->n_over_capacity, CTX "n_over_capacity", CTXA);

    /* Invariant 3 for what this plan did: a node it filled past its limit means all are full. */
    int final_load[MAXN];
    loads_of(m, m->mon, m->n_mon, final_load);
    for (int j = 0; j < m->n_nodes; j++)
        cr_assert_eq(final_load[j], load[j], CTX "replayed loads", CTXA);
    for (int j = 0; j < m->n_nodes; j++)
        if (received[j] && final_load[j] > lim[j])
            cr_assert(all_placeable_at_least(m, final_load, lim),
                      CTX "node %s over its limit while another has room", CTXA, m->ids[j]);
}

static void movable_of(const model *m, const plan_monitor *mon, int *mov)
{
    memset(mov, 0, sizeof(int) * MAXN);
    for (size_t i = 0; i < m->n_mon; i++) {
        const plan_monitor *x = &mon[i];
        if (x->active && x->over < 0 && placeable(m, x->home))
            mov[x->home]++;
    }
}

/* Rebalance: only plain monitors change home; the count is the minimum max(excess, deficit);
 * what is left unbalanced is left only because nothing movable remains (or no room); invariant
 * 3 holds; and a second rebalance is a no-op. */
static void check_rebalance(model *m, const plan_monitor *before, const plan_options *o,
                            const plan_result *r, stats *st)
{
    const op_kind op = OP_REBALANCE;
    int p = n_placeable(m);
    if (p < 2) {
        cr_assert_eq(r->n_moves, 0, CTX, CTXA);
        return;
    }
    int load0[MAXN], load1[MAXN], lo[MAXN], hi[MAXN], mov[MAXN], out[MAXN] = {0};
    loads_of(m, before, m->n_mon, load0);
    loads_of(m, m->mon, m->n_mon, load1);
    movable_of(m, before, mov);
    band_of(m, load0, o->tolerance, lo, hi);
    long long E = 0, D = 0, E1 = 0, D1 = 0;
    for (int j = 0; j < m->n_nodes; j++) {
        if (!placeable(m, j))
            continue;
        E += load0[j] > hi[j] ? load0[j] - hi[j] : 0;
        D += load0[j] < lo[j] ? lo[j] - load0[j] : 0;
        E1 += load1[j] > hi[j] ? load1[j] - hi[j] : 0;
        D1 += load1[j] < lo[j] ? lo[j] - load1[j] : 0;
    }
    for (size_t k = 0; k < r->n_moves; k++) {
        const plan_move *mv = &r->moves[k];
        const plan_monitor *x = &before[mv->monitor_index];
        cr_assert_eq(mv->kind, MOVE_SET_HOME, CTX, CTXA);
        cr_assert_eq(mv->clear_override, 0, CTX, CTXA);
        cr_assert_eq(x->over, -1, CTX "rebalance moved a monitor with an override", CTXA);
        cr_assert(placeable(m, x->home), CTX, CTXA);
        cr_assert_neq(mv->to, x->home, CTX "move to the same node", CTXA);
        out[x->home]++;
    }
    cr_assert_eq(r->n_rebalance, (int)r->n_moves, CTX, CTXA);
    long long minimum = E > D ? E : D;
    /* One home change lowers the excess by at most one and the deficit by at most one. */
    cr_assert_leq((long long)r->n_moves, minimum, CTX "more moves (%zu) than max(E=%lld, D=%lld)",
                  CTXA, r->n_moves, E, D);
    /* What was fixed needed at least max(resolved excess, resolved deficit) moves, and every
     * move must count towards it: no move is wasted, also where pins leave work undone. */
    long long resolved_e = E - E1, resolved_d = D - D1;
    long long resolved = resolved_e > resolved_d ? resolved_e : resolved_d;
    cr_assert_eq((long long)r->n_moves, resolved, CTX "%zu moves to resolve %lld", CTXA,
                 r->n_moves, resolved);
    st->rebalance_runs++;
    st->rebalance_moves += (long long)r->n_moves;
    st->rebalance_min += minimum;
    st->rebalance_resolved += resolved;
    if (E1 == 0 && D1 == 0) {
        /* Invariant 4: balanced, within the tolerance band, with exactly the minimum. */
        cr_assert_eq((long long)r->n_moves, minimum, CTX "not minimal", CTXA);
        st->rebalance_exact_runs++;
    } else {
        st->rebalance_limited_runs++;
        /* Left over only where no movable monitor remains / no node has room. */
        bool room = false, deficit_donor = false;
        for (int j = 0; j < m->n_nodes; j++) {
            if (!placeable(m, j))
                continue;
            room |= load1[j] < hi[j];
            deficit_donor |= load1[j] > lo[j] && mov[j] - out[j] > 0;
        }
        for (int j = 0; j < m->n_nodes; j++)
            if (placeable(m, j) && load1[j] > hi[j] && mov[j] - out[j] > 0)
                cr_assert_not(room, CTX "node %s above band with movable monitors and room left",
                              CTXA, m->ids[j]);
        if (D1 > 0)
            cr_assert_not(deficit_donor, CTX "deficit left while a donor had movable monitors",
                          CTXA);
    }
    /* Invariant 3: a node over its limit that still has movable monitors means all are full. */
    int lim[MAXN];
    for (int j = 0; j < m->n_nodes; j++)
        lim[j] = limit_of(m, j);
    for (int j = 0; j < m->n_nodes; j++)
        if (placeable(m, j) && load1[j] > lim[j] && mov[j] - out[j] > 0)
            cr_assert(all_placeable_at_least(m, load1, lim), CTX "node over limit", CTXA);

    /* Stability: rebalancing a balanced cluster moves nothing. */
    if (E1 == 0 && D1 == 0) {
        plan_view v = view_of(m);
        plan_result again;
        plan_result_init(&again);
        cr_assert_eq(plan_rebalance(&v, o, &again), 0);
        cr_assert_eq(again.n_moves, 0, CTX "second rebalance moved %zu", CTXA, again.n_moves);
        plan_result_free(&again);
    }
}

/* Force: every active unpinned monitor gets a placeable home and loses our override; only
 * those not already there move; bounded load holds; the outcome does not depend on where the
 * monitors were before (checked on a scrambled copy); running it twice moves nothing. */
static void check_force(model *m, const plan_monitor *before, const plan_options *o,
                        const plan_result *r, stats *st, uint64_t *s)
{
    const op_kind op = OP_FORCE;
    int p = n_placeable(m);
    size_t unpinned = 0, should_move = 0;
    for (size_t i = 0; i < m->n_mon; i++) {
        const plan_monitor *x = &before[i], *y = &m->mon[i];
        if (!x->active || pinned(x))
            continue;
        unpinned++;
        if (p == 0)
            continue;
        cr_assert(placeable(m, y->home) && y->over < 0, CTX "monitor %lld not re-homed", CTXA,
                  (long long)y->id);
        should_move += y->home != x->home || x->over >= 0;
    }
    if (p == 0) {
        cr_assert_eq(r->n_moves, 0, CTX, CTXA);
        cr_assert_eq((size_t)r->n_no_target, unpinned, CTX, CTXA);
        return;
    }
    cr_assert_eq(r->n_moves, should_move, CTX "force moved monitors already in place", CTXA);
    for (size_t k = 0; k < r->n_moves; k++) {
        const plan_move *mv = &r->moves[k];
        cr_assert_eq(mv->kind, MOVE_SET_HOME, CTX, CTXA);
        cr_assert_eq(mv->clear_override, before[mv->monitor_index].over >= 0, CTX, CTXA);
    }
    st->force_moves += (long long)r->n_moves;
    st->force_runs++;

    /* Even: the homes given equal the one-by-one placement of every unpinned monitor over the
     * pinned load. */
    int load[MAXN] = {0}, model_load[MAXN] = {0}, placed[MAXN] = {0};
    for (size_t i = 0; i < m->n_mon; i++)
        if (before[i].active && pinned(&before[i]))
            model_load[before[i].over]++;
    memcpy(load, model_load, sizeof(load));
    for (size_t i = 0; i < m->n_mon; i++) {
        const plan_monitor *x = &before[i];
        if (x->active && !pinned(x)) {
            load[m->mon[i].home]++;
            placed[m->mon[i].home]++;
        }
    }
    int over = place_one_by_one(m, model_load, (long long)unpinned);
    for (int j = 0; j < m->n_nodes; j++)
        if (placeable(m, j))
            cr_assert_eq(load[j], model_load[j], CTX "force not even: node %s has %d, one-by-one "
                         "placement gives %d", CTXA, m->ids[j], load[j], model_load[j]);
    check_level(m, load, placed, "force", op_names[op]);
    cr_assert_eq(over, r->n_over_capacity, CTX, CTXA);

    /* From scratch: scramble where the unpinned monitors are, force again, same homes. */
    model sc = *m;
    sc.mon = malloc((m->n_mon ? m->n_mon : 1) * sizeof(plan_monitor));
    cr_assert_not_null(sc.mon);
    if (m->n_mon)
        memcpy(sc.mon, before, m->n_mon * sizeof(plan_monitor));
    for (size_t i = 0; i < m->n_mon; i++) {
        plan_monitor *x = &sc.mon[i];
        if (pinned(x))
            continue;
        x->home = rnd_int(s, m->n_nodes + 1) - 1;
        bool ours = chance(s, 0.3);
        x->over = ours ? rnd_int(s, m->n_nodes) : -1;
        x->ours = ours;
    }
    plan_view v = view_of(&sc);
    plan_result r2;
    plan_result_init(&r2);
    cr_assert_eq(plan_force_all(&v, o, &r2), 0);
    for (size_t k = 0; k < r2.n_moves; k++)
        cr_assert(apply_one(&sc.mon[r2.moves[k].monitor_index], &r2.moves[k]));
    for (size_t i = 0; i < m->n_mon; i++)
        if (sc.mon[i].active && !pinned(&sc.mon[i]))
            cr_assert_eq(sc.mon[i].home, m->mon[i].home,
                         CTX "force depends on the starting homes (monitor %lld)", CTXA,
                         (long long)sc.mon[i].id);
    /* Idempotent. */
    plan_view vm = view_of(m);
    cr_assert_eq(plan_force_all(&vm, o, &r2), 0);
    cr_assert_eq(r2.n_moves, 0, CTX "second force moved %zu", CTXA, r2.n_moves);
    plan_result_free(&r2);
    free(sc.mon);
}

/* ======================================================================================== */
/* One step: plan, check determinism, maybe race with a Kuma node, apply, check              */
/* ======================================================================================== */

typedef struct {
    uint8_t *seen;
    uint8_t *edited;
    uint8_t *deleted;
    size_t cap;
} scratch;

static void scratch_fit(scratch *sc, size_t n)
{
    if (n + 1 <= sc->cap)
        return;
    sc->cap = (n + 1) * 2;
    sc->seen = realloc(sc->seen, sc->cap);
    sc->edited = realloc(sc->edited, sc->cap);
    sc->deleted = realloc(sc->deleted, sc->cap);
    cr_assert(sc->seen && sc->edited && sc->deleted);
}

static void scratch_free(scratch *sc)
{
    free(sc->seen);
    free(sc->edited);
    free(sc->deleted);
}

static void run_step(model *m, op_kind op, const plan_options *o, uint64_t *s, stats *st,
                     scratch *sc, double p_race, double p_shuffle)
{
    plan_view v = view_of(m);
    plan_result r, r2;
    plan_result_init(&r);
    plan_result_init(&r2);
    cr_assert_eq(run_plan(op, &v, o, &r), 0, CTX "planner failed", CTXA);
    cr_assert_eq(run_plan(op, &v, o, &r2), 0);
    cr_assert(same_moves(&r, &r2), CTX "same input, different plan", CTXA);
    plan_result_free(&r2);
    if (chance(s, p_shuffle)) {
        check_node_order_irrelevant(m, op, o, &r, s);
        st->shuffles++;
    }
    scratch_fit(sc, m->n_mon);
    check_moves_wellformed(m, op, &r, sc->seen);

    plan_monitor *before = malloc((m->n_mon ? m->n_mon : 1) * sizeof(plan_monitor));
    cr_assert_not_null(before);
    if (m->n_mon)
        memcpy(before, m->mon, m->n_mon * sizeof(plan_monitor));

    /* A Kuma node or an operator edits or deletes rows between planning and applying. */
    bool race = m->n_mon > 0 && chance(s, p_race);
    memset(sc->edited, 0, m->n_mon + 1);
    memset(sc->deleted, 0, m->n_mon + 1);
    if (race) {
        int edits = 1 + rnd_int(s, 8);
        for (int e = 0; e < edits; e++) {
            size_t i = (size_t)rnd_int(s, (int)m->n_mon);
            plan_monitor *x = &m->mon[i];
            switch (rnd_int(s, 5)) {
            case 0: x->over = rnd_int(s, m->n_nodes); x->ours = 0; break; /* operator pin */
            case 1: x->home = rnd_int(s, m->n_nodes + 1) - 1; break;      /* home edited */
            case 2: x->over = -1; x->ours = 0; break;                     /* override cleared */
            case 3: x->active = !x->active; break;                        /* (de)activated */
            default: sc->deleted[i] = 1; break;                           /* row deleted */
            }
            sc->edited[i] = 1;
        }
    }
    plan_monitor *edited_rows = malloc((m->n_mon ? m->n_mon : 1) * sizeof(plan_monitor));
    cr_assert_not_null(edited_rows);
    if (m->n_mon)
        memcpy(edited_rows, m->mon, m->n_mon * sizeof(plan_monitor));

    size_t skipped = 0;
    for (size_t k = 0; k < r.n_moves; k++) {
        const plan_move *mv = &r.moves[k];
        if (sc->deleted[mv->monitor_index] || !apply_one(&m->mon[mv->monitor_index], mv))
            skipped++;
    }
    st->guard_skips += (long long)skipped;
    if (!race)
        cr_assert_eq(skipped, 0, CTX "guard failed without a race", CTXA);

    /* Invariant 1: same ids, same order, nothing doubled; rows edited meanwhile keep the
     * edit whenever it touched the guarded columns. */
    for (size_t i = 0; i < m->n_mon; i++) {
        cr_assert_eq(m->mon[i].id, before[i].id, CTX "monitor ids changed", CTXA);
        if (i > 0)
            cr_assert_gt(m->mon[i].id, m->mon[i - 1].id, CTX "ids not unique", CTXA);
        if (sc->edited[i] && (edited_rows[i].home != before[i].home ||
                              edited_rows[i].over != before[i].over ||
                              edited_rows[i].active != before[i].active)) {
            cr_assert_eq(m->mon[i].home, edited_rows[i].home, CTX "concurrent edit clobbered", CTXA);
            cr_assert_eq(m->mon[i].over, edited_rows[i].over, CTX "concurrent edit clobbered", CTXA);
            cr_assert_eq(m->mon[i].ours, edited_rows[i].ours, CTX, CTXA);
        }
    }
    /* Invariant 5: pins are where they were (unless the race itself changed them). */
    for (size_t i = 0; i < m->n_mon; i++)
        if (pinned(&before[i]) && !sc->edited[i])
            cr_assert(m->mon[i].over == before[i].over && m->mon[i].home == before[i].home &&
                          !m->mon[i].ours,
                      CTX "pin of monitor %lld changed", CTXA, (long long)before[i].id);

    if (!race) {
        switch (op) {
        case OP_CONVERGE: check_converge(m, before, o, &r, st); break;
        case OP_REBALANCE: check_rebalance(m, before, o, &r, st); break;
        case OP_FORCE: check_force(m, before, o, &r, st, s); break;
        }
    } else {
        /* Drop deleted rows, as the table would. */
        size_t w = 0;
        for (size_t i = 0; i < m->n_mon; i++)
            if (!sc->deleted[i])
                m->mon[w++] = m->mon[i];
        m->n_mon = w;
    }
    st->steps++;
    free(before);
    free(edited_rows);
    plan_result_free(&r);
}

/* Random events between plans: nodes fail, recover, drain; limits change; monitors appear,
 * get pinned or unpinned, are switched on or off. */
static op_kind random_event(model *m, uint64_t *s)
{
    int roll = rnd_int(s, 100);
    int j = rnd_int(s, m->n_nodes);
    if (roll < 30) {
        random_node_state(m, s, j);
    } else if (roll < 42) {
        /* recovery path: offline -> recovering -> online -> stable */
        node_state st = m->nodes[j].state;
        if (st == NODE_ONLINE)
            m->nodes[j].revert_ok = true;
        else if (st == NODE_RECOVERING)
            m->nodes[j].state = NODE_ONLINE;
        else
            m->nodes[j].state = NODE_RECOVERING;
    } else if (roll < 48) {
        m->nodes[j].limit = random_limit(s, m->n_mon, m->n_nodes);
    } else if (roll < 56) {
        int add = rnd_int(s, 20);
        for (int a = 0; a < add; a++) {
            plan_monitor x = random_monitor(m, s, 0.05, 0.0);
            if (chance(s, 0.5)) {
                x.home = -1;
                x.over = -1;
            }
            model_push(m, x);
        }
    } else if (roll < 62 && m->n_mon > 0) {
        for (int e = 0; e < 5; e++) {
            plan_monitor *x = &m->mon[rnd_int(s, (int)m->n_mon)];
            switch (rnd_int(s, 3)) {
            case 0: x->over = rnd_int(s, m->n_nodes); x->ours = 0; break;
            case 1: x->over = -1; x->ours = 0; break;
            default: x->active = !x->active; break;
            }
        }
    } else if (roll < 82) {
        return OP_REBALANCE;
    } else if (roll < 86) {
        return OP_FORCE;
    }
    return OP_CONVERGE;
}

static plan_options random_options(uint64_t *s)
{
    plan_options o;
    plan_options_default(&o);
    o.tolerance = 0.02 + (double)rnd_int(s, 5) * 0.04; /* 0.02 .. 0.18 */
    o.revert_batch = chance(s, 0.1) ? 0 : 1 + rnd_int(s, 300);
    return o;
}

static void run_sequence(uint64_t seed, int n_nodes, size_t n_mon, int steps, stats *st,
                         scratch *sc, double p_race, double p_shuffle)
{
    model m;
    model_random(&m, seed, n_nodes, n_mon);
    uint64_t s = seed ^ 0xA5A5A5A5DEADBEEFull;
    plan_options o = random_options(&s);
    /* First bring the random table to a converged state, then play events. */
    m.step = 0;
    run_step(&m, OP_CONVERGE, &o, &s, st, sc, 0.0, p_shuffle);
    for (int k = 1; k <= steps; k++) {
        m.step = k;
        op_kind op = random_event(&m, &s);
        run_step(&m, op, &o, &s, st, sc, p_race, p_shuffle);
        if (op != OP_CONVERGE) {
            m.step = k * 1000; /* the converge that follows an operator action */
            run_step(&m, OP_CONVERGE, &o, &s, st, sc, p_race, p_shuffle);
        }
    }
    model_free(&m);
}

static double ratio(long long a, long long b)
{
    return b ? (double)a / (double)b : 1.0;
}

static void print_stats(const char *name, const stats *st, double secs)
{
    printf("[%s] %lld steps in %.2f s; failover moves/minimum = %lld/%lld = %.4f; "
           "rebalance moves/minimum-for-what-was-fixed = %lld/%lld = %.4f, "
           "moves/max(excess,deficit) = %lld/%lld = %.4f (%lld runs: %lld balanced exactly at "
           "the minimum, %lld limited by pins/overrides/capacity); adoptions %lld, reverts %lld, "
           "force runs %lld (%lld moves), over-capacity placements %lld, guard skips %lld, "
           "node-order shuffles %lld\n",
           name, st->steps, secs, st->failover_moves, st->failover_min,
           ratio(st->failover_moves, st->failover_min), st->rebalance_moves,
           st->rebalance_resolved, ratio(st->rebalance_moves, st->rebalance_resolved),
           st->rebalance_moves, st->rebalance_min,
           ratio(st->rebalance_moves, st->rebalance_min), st->rebalance_runs,
           st->rebalance_exact_runs, st->rebalance_limited_runs, st->adopt_moves,
           st->revert_moves, st->force_runs, st->force_moves, st->over_capacity,
           st->guard_skips, st->shuffles);
    fflush(stdout);
}

/* KG_ASSIGN_SEED=<n> replays the randomised tests with another base seed (CI uses the fixed
 * default so a failure is reproducible; a failing message names the per-cluster seed). */
static uint64_t base_seed(uint64_t fallback)
{
    const char *e = getenv("KG_ASSIGN_SEED");
    if (!e || !*e)
        return fallback;
    return fallback ^ strtoull(e, NULL, 10) * 0x9E3779B97F4A7C15ull;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ======================================================================================== */
/* Tests                                                                                    */
/* ======================================================================================== */

Test(assign_props, thousands_of_small_random_sequences, .timeout = 60)
{
    stats st = {0};
    scratch sc = {0};
    double t0 = now_s();
    uint64_t s = base_seed(20240601);
    for (int c = 0; c < 2000; c++) {
        int n_nodes = 1 + rnd_int(&s, MAXN);
        size_t n_mon = (size_t)(chance(&s, 0.1) ? rnd_int(&s, 20) : rnd_int(&s, 1500));
        run_sequence(rnd(&s), n_nodes, n_mon, 8, &st, &sc, 0.15, 0.3);
    }
    print_stats("small", &st, now_s() - t0);
    cr_assert_eq(st.failover_moves, st.failover_min);
    cr_assert_gt(st.rebalance_exact_runs, 100, "the exact-minimum path must be exercised");
    cr_assert_gt(st.guard_skips, 0, "races must be exercised");
    cr_assert_gt(st.over_capacity, 0, "full clusters must be exercised");
    scratch_free(&sc);
}

Test(assign_props, large_random_sequences, .timeout = 60)
{
    stats st = {0};
    scratch sc = {0};
    double t0 = now_s();
    uint64_t s = base_seed(77);
    for (int c = 0; c < 8; c++) {
        int n_nodes = 2 + rnd_int(&s, MAXN - 1);
        size_t n_mon = 20000 + (size_t)rnd_int(&s, 80001);
        run_sequence(rnd(&s), n_nodes, n_mon, 12, &st, &sc, 0.15, 0.3);
    }
    print_stats("large", &st, now_s() - t0);
    cr_assert_eq(st.failover_moves, st.failover_min);
    scratch_free(&sc);
}

/* Plain clusters (no pins, no overrides, no limits): a dead node's monitors are spread within
 * the bounded-load cap and rebalance always reaches the band with exactly the minimum. */
Test(assign_props, plain_clusters_balance_exactly, .timeout = 60)
{
    stats st = {0};
    scratch sc = {0};
    uint64_t s = base_seed(4242);
    double t0 = now_s();
    for (int c = 0; c < 400; c++) {
        model m;
        int n_nodes = 2 + rnd_int(&s, 30);
        memset(&m, 0, sizeof(m));
        m.seed = rnd(&s);
        m.n_nodes = n_nodes;
        m.next_id = 1;
        for (int j = 0; j < n_nodes; j++) {
            snprintf(m.ids[j], sizeof(m.ids[j]), "n%d", j);
            m.nodes[j] = (plan_node){.id = m.ids[j], .state = NODE_ONLINE, .limit = 1000000,
                                     .revert_ok = true};
        }
        size_t n_mon = (size_t)rnd_int(&s, 5000);
        int skew = rnd_int(&s, n_nodes) + 1; /* monitors start on the first `skew` nodes */
        for (size_t i = 0; i < n_mon; i++) {
            plan_monitor x = {.id = m.next_id++, .home = rnd_int(&s, skew), .over = -1,
                              .active = 1};
            model_push(&m, x);
        }
        plan_options o = random_options(&s);
        m.step = 1;
        run_step(&m, OP_REBALANCE, &o, &s, &st, &sc, 0.0, 0.2);
        m.nodes[rnd_int(&s, n_nodes)].state = NODE_OFFLINE;
        m.step = 2;
        run_step(&m, OP_CONVERGE, &o, &s, &st, &sc, 0.0, 0.2);
        model_free(&m);
    }
    print_stats("plain", &st, now_s() - t0);
    cr_assert_eq(st.rebalance_limited_runs, 0, "plain clusters always balance");
    cr_assert_eq(st.rebalance_moves, st.rebalance_min);
    scratch_free(&sc);
}

/* Issue 15: equal survivors end within one monitor of each other after a failover, whatever
 * the cluster size; the last cases are 100,000 monitors failing over to 9 survivors, where the
 * spread must be rounding only (at most one monitor, far below 0.1 %). */
Test(assign_props, failover_over_equal_survivors_is_even_to_one_monitor, .timeout = 60)
{
    uint64_t s = base_seed(99);
    double worst_spread = 0;
    for (int c = 0; c < 205; c++) {
        model m;
        bool big = c >= 200;
        int n_nodes = big ? 10 : 3 + rnd_int(&s, 20);
        memset(&m, 0, sizeof(m));
        m.n_nodes = n_nodes;
        m.seed = (uint64_t)c;
        for (int j = 0; j < n_nodes; j++) {
            snprintf(m.ids[j], sizeof(m.ids[j]), "node%d", j + 1);
            m.nodes[j] = (plan_node){.id = m.ids[j], .state = NODE_ONLINE, .limit = 1000000};
        }
        /* equal survivors: the same number of monitors on every node, or all on the one that
         * dies (then the survivors start empty) */
        bool all_on_dead = big || chance(&s, 0.3);
        int dead = rnd_int(&s, n_nodes);
        int per = big ? 10000 + rnd_int(&s, 10) : 50 + rnd_int(&s, 500);
        int total = big ? 100000 + rnd_int(&s, 9) : per * n_nodes;
        for (int i = 0; i < total; i++)
            model_push(&m, (plan_monitor){.id = 3 * i + 1 + rnd_int(&s, 3),
                                          .home = all_on_dead ? dead : i % n_nodes, .over = -1,
                                          .active = 1});
        m.nodes[dead].state = NODE_OFFLINE;
        plan_view v = view_of(&m);
        plan_result r;
        plan_result_init(&r);
        cr_assert_eq(plan_converge(&v, NULL, &r), 0);
        for (size_t k = 0; k < r.n_moves; k++)
            cr_assert(apply_one(&m.mon[r.moves[k].monitor_index], &r.moves[k]));
        int load[MAXN];
        loads_of(&m, m.mon, m.n_mon, load);
        int lo = 1 << 30, hi = 0;
        for (int j = 0; j < n_nodes; j++) {
            if (j == dead)
                continue;
            lo = load[j] < lo ? load[j] : lo;
            hi = load[j] > hi ? load[j] : hi;
        }
        cr_assert_leq(hi - lo, 1, "case %d: %d nodes, survivors %d..%d", c, n_nodes, lo, hi);
        if (big) {
            cr_assert_geq(r.n_moves, 100000);
            cr_assert_leq((double)(hi - lo) / lo, 0.001, "spread over 0.1 %%");
            double spread = (double)(hi - lo) / lo;
            worst_spread = spread > worst_spread ? spread : worst_spread;
        }
        plan_result_free(&r);
        model_free(&m);
    }
    printf("[failover evenness] equal survivors always within one monitor; 100,000 monitors "
           "over 9 survivors: worst max-min spread %.4f %%\n", 100 * worst_spread);
}
