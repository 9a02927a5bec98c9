/* assign.c — the assignment planner (SPEC section 3): failover, revert, adoption, rebalance and
 * force-rebalance as pure functions from a plan_view to a list of guarded moves.
 *
 * Owns: placement rules (bounded-load rendezvous hashing, minimal-movement rebalancing).
 * Must not: touch storage, log, read a clock, use globals or randomness.  Every choice is a
 * function of monitor ids, node ids, states and limits, so two controllers given the same view
 * plan the same moves, whatever order the nodes are listed in.
 *
 * Cost: each plan makes a few linear passes over the monitors, allocates per-node arrays and the
 * moves array once (rebalance also one candidate array and one bitmap), and never allocates per
 * monitor.  Only monitors that must be placed are scored against every placeable node. */
#include "assign.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Absorbs floating error so that e.g. ceil(1.1 * 150) is 165, not 166. */
#define FP_SLACK 1e-9

/* ======================================================================================== */
/* Hashing                                                                                  */
/* ======================================================================================== */

/* splitmix64's finaliser: a fast bijective mix with good avalanche, enough for rendezvous. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Node hash from the node id string only (never its index), so listing order is irrelevant. */
static uint64_t node_hash(const char *id)
{
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)(id ? id : ""); *p; p++) {
        h ^= *p;
        h *= 0x100000001B3ull;
    }
    return mix64(h);
}

static uint64_t monitor_key(int64_t id)
{
    return mix64((uint64_t)id);
}

/* Rendezvous weight of a monitor on a node: higher wins. */
static inline uint64_t hrw_score(uint64_t mkey, uint64_t nhash)
{
    return mix64(mkey ^ nhash);
}

/* ======================================================================================== */
/* Per-plan context: per-node arrays, built once per call                                   */
/* ======================================================================================== */

typedef struct {
    const plan_view *v;
    int n;            /* nodes in the view */
    int n_place;      /* placeable nodes */
    int *place;       /* [n_place] placeable node indexes, in node-id order (tie-break order) */
    int *rank;        /* [n] position of node j in node-id order */
    int *load;        /* [n] active monitors per effective node, updated as moves are planned */
    int *cap;         /* [n] bounded-load cap (failover, force) */
    int *limit;       /* [n] monitor limit, negative clamped to 0 */
    uint64_t *hash;   /* [n] node_hash of the id */
    bool *placeable;  /* [n] */
} plan_ctx;

typedef struct {
    const char *id;
    int idx;
} id_ref;

static int id_ref_cmp(const void *a, const void *b)
{
    const id_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c)
        return c;
    /* Duplicate ids are a caller bug; still keep the order total. */
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static void ctx_free(plan_ctx *c)
{
    free(c->place);
    free(c->rank);
    free(c->load);
    free(c->cap);
    free(c->limit);
    free(c->hash);
    free(c->placeable);
    memset(c, 0, sizeof(*c));
}

/* Rejects references outside the node table: every index must be -1 or a node. */
static bool view_valid(const plan_view *v)
{
    if (!v || v->n_nodes < 0 || (v->n_nodes > 0 && !v->nodes))
        return false;
    if (v->n_monitors > 0 && !v->monitors)
        return false;
    if (v->n_monitors > (size_t)UINT32_MAX)
        return false;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (m->home < -1 || m->home >= v->n_nodes || m->over < -1 || m->over >= v->n_nodes)
            return false;
    }
    return true;
}

static int ctx_init(plan_ctx *c, const plan_view *v)
{
    memset(c, 0, sizeof(*c));
    if (!view_valid(v))
        return -1;
    c->v = v;
    c->n = v->n_nodes;
    size_t nn = (size_t)(c->n > 0 ? c->n : 1);
    c->place = calloc(nn, sizeof(int));
    c->rank = calloc(nn, sizeof(int));
    c->load = calloc(nn, sizeof(int));
    c->cap = calloc(nn, sizeof(int));
    c->limit = calloc(nn, sizeof(int));
    c->hash = calloc(nn, sizeof(uint64_t));
    c->placeable = calloc(nn, sizeof(bool));
    id_ref *order = calloc(nn, sizeof(id_ref));
    if (!c->place || !c->rank || !c->load || !c->cap || !c->limit || !c->hash || !c->placeable ||
        !order) {
        free(order);
        ctx_free(c);
        return -1;
    }
    for (int j = 0; j < c->n; j++) {
        const plan_node *nd = &v->nodes[j];
        order[j].id = nd->id ? nd->id : "";
        order[j].idx = j;
        c->hash[j] = node_hash(nd->id);
        c->limit[j] = nd->limit > 0 ? nd->limit : 0;
        c->placeable[j] = node_state_placeable(nd->state) && !nd->keep;
    }
    qsort(order, (size_t)c->n, sizeof(id_ref), id_ref_cmp);
    for (int k = 0; k < c->n; k++) {
        int j = order[k].idx;
        c->rank[j] = k;
        if (c->placeable[j])
            c->place[c->n_place++] = j;
    }
    free(order);
    return 0;
}

/* Sets cap[j] = min(limit, ceil((1+eps) * total / n_place)) for every placeable node. */
static void ctx_set_caps(plan_ctx *c, long long total, double epsilon)
{
    if (c->n_place == 0)
        return;
    if (epsilon < 0)
        epsilon = 0;
    double mean = (double)total / c->n_place;
    double b = ceil((1.0 + epsilon) * mean - FP_SLACK);
    int bound = b > (double)INT32_MAX ? INT32_MAX : (int)b;
    for (int k = 0; k < c->n_place; k++) {
        int j = c->place[k];
        c->cap[j] = bound < c->limit[j] ? bound : c->limit[j];
    }
}

static long long placeable_load(const plan_ctx *c)
{
    long long t = 0;
    for (int k = 0; k < c->n_place; k++)
        t += c->load[c->place[k]];
    return t;
}

/* Bounded-load rendezvous: the highest-scoring placeable node below its cap; else the
 * highest-scoring node below its limit; else (everything full) the least loaded node, flagged
 * as over capacity — running over the limit beats not running.  Ties go to the lower node id
 * because place[] is in id order and only a strictly higher score replaces the best. */
static int pick_bounded(const plan_ctx *c, uint64_t mkey, bool *over_capacity)
{
    int best = -1, room = -1, least = -1;
    uint64_t best_s = 0, room_s = 0;
    *over_capacity = false;
    for (int k = 0; k < c->n_place; k++) {
        int j = c->place[k];
        int l = c->load[j];
        if (least < 0 || l < c->load[least])
            least = j;
        if (l >= c->limit[j])
            continue;
        uint64_t s = hrw_score(mkey, c->hash[j]);
        if (l < c->cap[j] && (best < 0 || s > best_s)) {
            best = j;
            best_s = s;
        }
        if (room < 0 || s > room_s) {
            room = j;
            room_s = s;
        }
    }
    if (best >= 0)
        return best;
    if (room >= 0)
        return room;
    *over_capacity = true;
    return least;
}

/* Least loaded placeable node with room under its limit (ties: lower node id); when all are
 * full, the least loaded one, flagged as over capacity. */
static int pick_least_loaded(const plan_ctx *c, bool *over_capacity)
{
    int room = -1, least = -1;
    for (int k = 0; k < c->n_place; k++) {
        int j = c->place[k];
        if (least < 0 || c->load[j] < c->load[least])
            least = j;
        if (c->load[j] < c->limit[j] && (room < 0 || c->load[j] < c->load[room]))
            room = j;
    }
    *over_capacity = room < 0;
    return room >= 0 ? room : least;
}

/* ======================================================================================== */
/* Result handling                                                                          */
/* ======================================================================================== */

void plan_options_default(plan_options *o)
{
    o->epsilon = 0.1;
    o->revert_batch = 500;
    o->tolerance = 0.1;
}

void plan_result_init(plan_result *r)
{
    memset(r, 0, sizeof(*r));
}

void plan_result_free(plan_result *r)
{
    free(r->moves);
    memset(r, 0, sizeof(*r));
}

/* A plan replaces whatever the result held; the moves buffer is reused. */
static void result_reset(plan_result *r)
{
    plan_move *moves = r->moves;
    size_t cap = r->cap_moves;
    memset(r, 0, sizeof(*r));
    r->moves = moves;
    r->cap_moves = cap;
}

/* Grows the moves array once to the number of moves the plan can make at most. */
static int result_reserve(plan_result *r, size_t need)
{
    if (need <= r->cap_moves)
        return 0;
    plan_move *m = realloc(r->moves, need * sizeof(plan_move));
    if (!m)
        return -1;
    r->moves = m;
    r->cap_moves = need;
    return 0;
}

static void push_move(plan_result *r, const plan_view *v, size_t i, plan_move_kind kind,
                      int32_t to, bool clear_override)
{
    const plan_monitor *m = &v->monitors[i];
    plan_move *mv = &r->moves[r->n_moves++];
    mv->monitor_id = m->id;
    mv->monitor_index = (uint32_t)i;
    mv->kind = (uint8_t)kind;
    mv->clear_override = clear_override ? 1 : 0;
    mv->to = to;
    mv->expect_home = m->home;
    mv->expect_over = m->over;
}

static const plan_options *options_or_default(const plan_options *o, plan_options *tmp)
{
    if (o)
        return o;
    plan_options_default(tmp);
    return tmp;
}

static inline bool is_pinned(const plan_monitor *m)
{
    return m->over >= 0 && !m->ours;
}

void plan_count_load(const plan_view *v, int *load)
{
    if (!v || v->n_nodes <= 0)
        return;
    memset(load, 0, (size_t)v->n_nodes * sizeof(int));
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        int32_t e = plan_effective(m);
        if (m->active && e >= 0 && e < v->n_nodes)
            load[e]++;
    }
}

/* ======================================================================================== */
/* Converge: revert, failover, adoption                                                     */
/* ======================================================================================== */

/* Our override may go home: home online and stable (revert_ok), placeable, reverts enabled. */
static bool home_takes_revert(const plan_ctx *c, const plan_options *o, const plan_monitor *m)
{
    return o->revert_batch > 0 && m->home >= 0 && c->placeable[m->home] &&
           c->v->nodes[m->home].revert_ok;
}

/* Reverts come first so that failover targets see the loads after them.  Only overrides on a
 * live node are handled here (at most revert_batch per plan, lowest monitor id first, and never
 * pushing the home over its limit); an override on a dead node must move anyway and is handled
 * by failover without using the batch.  An override that already points at its home changes
 * nothing that runs, so clearing it is free. */
static void converge_reverts(plan_ctx *c, const plan_options *o, plan_result *r)
{
    const plan_view *v = c->v;
    int budget = o->revert_batch;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active || m->over < 0 || !m->ours || !c->placeable[m->over])
            continue;
        if (!home_takes_revert(c, o, m))
            continue;
        if (m->over != m->home) {
            if (c->load[m->home] >= c->limit[m->home])
                continue;
            if (budget <= 0) {
                r->reverts_truncated = true;
                continue;
            }
            budget--;
            c->load[m->over]--;
            c->load[m->home]++;
        }
        push_move(r, v, i, MOVE_CLEAR_OVERRIDE, -1, false);
        r->n_revert++;
    }
}

/* Every active, unpinned monitor whose effective node is not placeable gets a new one.  Our
 * override on a dead node goes home when the home may take reverts; otherwise the monitor gets
 * a bounded-load rendezvous target (clearing the override instead when the target is its
 * home, which leaves the same effective node without an override to revert later). */
static void converge_failover(plan_ctx *c, const plan_options *o, plan_result *r,
                              size_t n_fail)
{
    const plan_view *v = c->v;
    ctx_set_caps(c, placeable_load(c) + (long long)n_fail, o->epsilon);
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active || is_pinned(m))
            continue;
        int32_t eff = plan_effective(m);
        if (eff < 0 || c->placeable[eff] || v->nodes[eff].keep)
            continue;
        int32_t to;
        bool over_cap = false;
        if (m->over >= 0 && home_takes_revert(c, o, m) &&
            c->load[m->home] < c->limit[m->home]) {
            to = m->home;
        } else {
            to = pick_bounded(c, monitor_key(m->id), &over_cap);
        }
        if (to == m->home)
            push_move(r, v, i, MOVE_CLEAR_OVERRIDE, -1, false);
        else
            push_move(r, v, i, MOVE_SET_OVERRIDE, to, false);
        c->load[eff]--;
        c->load[to]++;
        r->n_failover++;
        if (over_cap)
            r->n_over_capacity++;
    }
}

static void converge_adopt(plan_ctx *c, plan_result *r)
{
    const plan_view *v = c->v;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active || m->home >= 0 || m->over >= 0)
            continue;
        bool over_cap;
        int to = pick_least_loaded(c, &over_cap);
        push_move(r, v, i, MOVE_SET_HOME, to, false);
        c->load[to]++;
        r->n_adopt++;
        if (over_cap)
            r->n_over_capacity++;
    }
}

int plan_converge(const plan_view *v, const plan_options *o, plan_result *r)
{
    plan_options tmp;
    o = options_or_default(o, &tmp);
    result_reset(r);
    plan_ctx c;
    if (ctx_init(&c, v) != 0)
        return -1;
    plan_count_load(v, c.load);

    /* Census: how many need a node, how many reverts are conceivable (for the one allocation). */
    size_t n_fail = 0, n_adopt = 0, n_rev = 0;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active)
            continue;
        if (is_pinned(m)) {
            if (!node_state_routable(v->nodes[m->over].state))
                r->n_pinned_stranded++;
            continue;
        }
        int32_t eff = plan_effective(m);
        if (eff < 0)
            n_adopt++;
        else if (!c.placeable[eff] && !v->nodes[eff].keep)
            n_fail++;
        else if (m->over >= 0)
            n_rev++;
    }
    if (c.n_place == 0) {
        /* Nowhere to go: move nothing (monitors on a draining node keep running there) and
         * say how many wait; the next plan retries when a node becomes placeable. */
        r->n_no_target = (int)(n_fail + n_adopt);
        ctx_free(&c);
        return 0;
    }
    if (result_reserve(r, n_fail + n_adopt + n_rev) != 0) {
        ctx_free(&c);
        return -1;
    }
    converge_reverts(&c, o, r);
    if (n_fail)
        converge_failover(&c, o, r, n_fail);
    if (n_adopt)
        converge_adopt(&c, r);
    ctx_free(&c);
    return 0;
}

/* ======================================================================================== */
/* Force rebalance all                                                                      */
/* ======================================================================================== */

int plan_force_all(const plan_view *v, const plan_options *o, plan_result *r)
{
    plan_options tmp;
    o = options_or_default(o, &tmp);
    result_reset(r);
    plan_ctx c;
    if (ctx_init(&c, v) != 0)
        return -1;

    /* From scratch: the only load that stays put is the pinned one. */
    size_t n_place_me = 0;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active)
            continue;
        if (is_pinned(m)) {
            c.load[m->over]++;
            if (!node_state_routable(v->nodes[m->over].state))
                r->n_pinned_stranded++;
        } else {
            n_place_me++;
        }
    }
    if (c.n_place == 0) {
        r->n_no_target = (int)n_place_me;
        ctx_free(&c);
        return 0;
    }
    if (result_reserve(r, n_place_me) != 0) {
        ctx_free(&c);
        return -1;
    }
    ctx_set_caps(&c, placeable_load(&c) + (long long)n_place_me, o->epsilon);
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active || is_pinned(m))
            continue;
        bool over_cap;
        int to = pick_bounded(&c, monitor_key(m->id), &over_cap);
        c.load[to]++;
        if (over_cap)
            r->n_over_capacity++;
        if (to == m->home && m->over < 0)
            continue; /* already where it belongs */
        push_move(r, v, i, MOVE_SET_HOME, to, m->over >= 0);
        if (m->home < 0)
            r->n_adopt++;
        else
            r->n_rebalance++;
    }
    ctx_free(&c);
    return 0;
}

/* ======================================================================================== */
/* Rebalance                                                                                */
/* ======================================================================================== */

/* Balance bounds of one node: a node is balanced when lo <= load <= hi. */
typedef struct {
    int lo, hi;
} bounds;

/* The tolerance band, made achievable with integer loads and with limits:
 *   hi = min(limit, B) with B = max(ceil(mean), floor(mean*(1+tol))), raised when the nodes with
 *        small limits cannot hold their share, until sum(hi) >= total (or every hi is the limit);
 *   lo = min(hi, min(floor(mean), ceil(mean*(1-tol)))), so sum(lo) <= total.
 * With sum(lo) <= total <= sum(hi) a balanced state exists, and the greedy below reaches it in
 * max(sum of excess over hi, sum of deficit under lo) moves, which is the minimum because one
 * move lowers each of the two sums by at most one. */
static void rebalance_bounds(const plan_ctx *c, double tol, long long total, bounds *b)
{
    int p = c->n_place;
    if (tol < 0)
        tol = 0;
    long long floor_mean = total / p, ceil_mean = (total + p - 1) / p;
    long long up = (long long)floor((double)total * (1.0 + tol) / p + FP_SLACK);
    long long down = (long long)ceil((double)total * (1.0 - tol) / p - FP_SLACK);
    long long B = up > ceil_mean ? up : ceil_mean;
    long long lo = down < floor_mean ? down : floor_mean;
    if (lo < 0)
        lo = 0;

    long long sum_limit = 0, max_limit = 0, sum_hi = 0;
    for (int k = 0; k < p; k++) {
        int j = c->place[k];
        sum_limit += c->limit[j];
        if (c->limit[j] > max_limit)
            max_limit = c->limit[j];
        sum_hi += c->limit[j] < B ? c->limit[j] : B;
    }
    if (sum_hi < total) {
        if (sum_limit <= total) {
            B = max_limit; /* overloaded cluster: the limits are the bounds */
        } else {
            long long a = B, z = max_limit; /* smallest B with sum(min(limit, B)) >= total */
            while (a < z) {
                long long mid = a + (z - a) / 2, s = 0;
                for (int k = 0; k < p; k++) {
                    int l = c->limit[c->place[k]];
                    s += l < mid ? l : mid;
                }
                if (s >= total)
                    z = mid;
                else
                    a = mid + 1;
            }
            B = a;
        }
    }
    for (int k = 0; k < p; k++) {
        int j = c->place[k];
        long long hi = c->limit[j] < B ? c->limit[j] : B;
        b[j].hi = (int)hi;
        b[j].lo = (int)(lo < hi ? lo : hi);
    }
}

/* Decides how many monitors leave (out) and arrive at (in) each placeable node, one move at a
 * time so loads level out: while some node is above hi and has a movable monitor, take from the
 * one most above hi and give to the one most below lo, or else to the one with the most room
 * under hi; once no excess can move, fill nodes below lo from the node most above its lo. */
static size_t rebalance_quotas(const plan_ctx *c, const bounds *b, const int *movable, int *out,
                               int *in)
{
    int *load = c->load;
    size_t moves = 0;
    for (;;) {
        int donor = -1, deficit = -1, roomy = -1;
        for (int k = 0; k < c->n_place; k++) {
            int j = c->place[k];
            int ex = load[j] - b[j].hi;
            if (ex > 0 && movable[j] > out[j] && (donor < 0 || ex > load[donor] - b[donor].hi))
                donor = j;
            int def = b[j].lo - load[j];
            if (def > 0 && (deficit < 0 || def > b[deficit].lo - load[deficit]))
                deficit = j;
            int room = b[j].hi - load[j];
            if (room > 0 && (roomy < 0 || room > b[roomy].hi - load[roomy]))
                roomy = j;
        }
        int to = deficit >= 0 ? deficit : roomy;
        if (donor < 0 && deficit >= 0) {
            for (int k = 0; k < c->n_place; k++) {
                int j = c->place[k];
                int above = load[j] - b[j].lo;
                if (above > 0 && movable[j] > out[j] &&
                    (donor < 0 || above > load[donor] - b[donor].lo))
                    donor = j;
            }
        }
        if (donor < 0 || to < 0)
            break;
        out[donor]++;
        in[to]++;
        load[donor]--;
        load[to]++;
        moves++;
    }
    return moves;
}

typedef struct {
    uint64_t key;
    uint32_t idx;
} cand;

static inline bool cand_less(cand a, cand b)
{
    return a.key < b.key || (a.key == b.key && a.idx < b.idx);
}

static inline void cand_swap(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Rearranges a[0..n) so that its k smallest elements (a total order: keys then indexes) come
 * first.  Quickselect with a median-of-three pivot; keys are hashes, so O(n) expected. */
static void select_smallest(cand *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n; /* the k-th smallest is somewhere in [lo, hi) */
    if (k == 0 || k >= n)
        return;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        if (cand_less(a[mid], a[lo]))
            cand_swap(&a[mid], &a[lo]);
        if (cand_less(a[last], a[lo]))
            cand_swap(&a[last], &a[lo]);
        if (cand_less(a[mid], a[last]))
            cand_swap(&a[mid], &a[last]);
        cand pivot = a[last]; /* the median of the three now sits at the end */
        size_t store = lo;
        for (size_t i = lo; i < last; i++)
            if (cand_less(a[i], pivot))
                cand_swap(&a[i], &a[store++]);
        cand_swap(&a[store], &a[last]);
        if (store == k)
            return;
        if (store < k)
            lo = store + 1;
        else
            hi = store;
    }
}

/* Which monitors leave a donor: the ones with the lowest rendezvous weight on it, i.e. the ones
 * hashing would least place there, so repeated runs and other controllers agree.  Where each
 * goes: the receiver with the highest weight among those still short, in monitor id order. */
static int rebalance_pick(const plan_ctx *c, const int *out, int *in, plan_result *r)
{
    const plan_view *v = c->v;
    int n = c->n, rc = -1;
    size_t *start = calloc((size_t)n + 1, sizeof(size_t)); /* bucket of donor j: [start[j], start[j+1]) */
    size_t *fill = calloc((size_t)n, sizeof(size_t));
    int *recv = calloc((size_t)c->n_place, sizeof(int));
    uint64_t *chosen = calloc(v->n_monitors / 64 + 1, sizeof(uint64_t)); /* bitmap by index */
    cand *cands = NULL;
    if (!start || !fill || !recv || !chosen)
        goto done;

    /* Candidates: movable monitors on donors, bucketed by donor (counting sort). */
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (m->active && m->over < 0 && m->home >= 0 && out[m->home] > 0)
            fill[m->home]++;
    }
    size_t total = 0;
    for (int j = 0; j < n; j++) {
        start[j] = total;
        total += fill[j];
        fill[j] = start[j];
    }
    start[n] = total;
    cands = malloc((total ? total : 1) * sizeof(cand));
    if (!cands)
        goto done;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (m->active && m->over < 0 && m->home >= 0 && out[m->home] > 0) {
            cand *x = &cands[fill[m->home]++];
            x->key = hrw_score(monitor_key(m->id), c->hash[m->home]);
            x->idx = (uint32_t)i;
        }
    }
    for (int j = 0; j < n; j++) {
        if (out[j] <= 0)
            continue;
        size_t len = start[j + 1] - start[j];
        size_t k = (size_t)out[j] < len ? (size_t)out[j] : len;
        select_smallest(cands + start[j], len, k);
        for (size_t q = 0; q < k; q++) {
            uint32_t idx = cands[start[j] + q].idx;
            chosen[idx / 64] |= 1ull << (idx % 64);
        }
    }

    /* Receivers in node-id order; a monitor goes to the best-scoring one still short. */
    int n_recv = 0;
    for (int k = 0; k < c->n_place; k++)
        if (in[c->place[k]] > 0)
            recv[n_recv++] = c->place[k];
    for (size_t i = 0; i < v->n_monitors && n_recv > 0; i++) {
        if (!((chosen[i / 64] >> (i % 64)) & 1))
            continue;
        uint64_t mkey = monitor_key(v->monitors[i].id);
        int best = 0;
        uint64_t best_s = hrw_score(mkey, c->hash[recv[0]]);
        for (int q = 1; q < n_recv; q++) {
            uint64_t s = hrw_score(mkey, c->hash[recv[q]]);
            if (s > best_s) {
                best = q;
                best_s = s;
            }
        }
        int to = recv[best];
        push_move(r, v, i, MOVE_SET_HOME, to, false);
        r->n_rebalance++;
        if (--in[to] == 0) {
            /* keep the id order of the remaining receivers (it breaks score ties) */
            memmove(&recv[best], &recv[best + 1], (size_t)(n_recv - best - 1) * sizeof(int));
            n_recv--;
        }
    }
    rc = 0;
done:
    free(cands);
    free(chosen);
    free(recv);
    free(fill);
    free(start);
    return rc;
}

int plan_rebalance(const plan_view *v, const plan_options *o, plan_result *r)
{
    plan_options tmp;
    o = options_or_default(o, &tmp);
    result_reset(r);
    plan_ctx c;
    if (ctx_init(&c, v) != 0)
        return -1;
    if (c.n_place < 2) {
        ctx_free(&c);
        return 0;
    }
    plan_count_load(v, c.load);
    int *movable = calloc((size_t)c.n, sizeof(int));
    int *out = calloc((size_t)c.n, sizeof(int));
    int *in = calloc((size_t)c.n, sizeof(int));
    bounds *b = calloc((size_t)c.n, sizeof(bounds));
    int rc = -1;
    if (!movable || !out || !in || !b)
        goto done;
    /* Movable: active, no override of any kind (an override is a failover or a pin, and its
     * effective node is not decided by the home), homed on a placeable node. */
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (m->active && m->over < 0 && m->home >= 0 && c.placeable[m->home])
            movable[m->home]++;
    }
    rebalance_bounds(&c, o->tolerance, placeable_load(&c), b);
    size_t n = rebalance_quotas(&c, b, movable, out, in);
    rc = 0;
    if (n == 0)
        goto done;
    if (result_reserve(r, n) != 0 || rebalance_pick(&c, out, in, r) != 0)
        rc = -1;
done:
    free(movable);
    free(out);
    free(in);
    free(b);
    ctx_free(&c);
    return rc;
}
