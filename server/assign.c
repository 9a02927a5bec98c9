/* assign.c — the assignment planner: failover, revert, adoption, rebalance and
 * force-rebalance as pure functions from a plan_view to a list of guarded moves.
 *
 * Owns: placement rules (even placement by water-filling, minimal-movement rebalancing).
 * Must not: touch storage, log, read a clock, use globals or randomness.  Every choice is a
 * function of monitor ids, node ids, states and limits, so two controllers given the same view
 * plan the same moves, whatever order the nodes are listed in.
 *
 * Cost: each plan makes a few linear passes over the monitors, allocates per-node arrays and the
 * moves array once (rebalance also one candidate array and one bitmap), and never allocates per
 * monitor.  No step costs monitors x nodes: how many monitors each node takes is computed per
 * node (water-filling, heaps keyed by load), and placing one monitor is O(1) amortised (see
 * quota_picker), so 1,000,000 monitors over 1,000 nodes plan in tens of milliseconds. */
#include "assign.h"

#include <limits.h>
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
    c->limit = calloc(nn, sizeof(int));
    c->hash = calloc(nn, sizeof(uint64_t));
    c->placeable = calloc(nn, sizeof(bool));
    id_ref *order = calloc(nn, sizeof(id_ref));
    if (!c->place || !c->rank || !c->load || !c->limit || !c->hash || !c->placeable || !order) {
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

static long long placeable_load(const plan_ctx *c)
{
    long long t = 0;
    for (int k = 0; k < c->n_place; k++)
        t += c->load[c->place[k]];
    return t;
}

/* ======================================================================================== */
/* Even placement                                                                           */
/* ======================================================================================== */

/* Monitors node j takes to rise from base[j] to `level` (with `capped`, never above its limit). */
static inline long long fill_of(const plan_ctx *c, const long long *base, int j, long long level,
                                bool capped)
{
    long long top = capped && c->limit[j] < level ? c->limit[j] : level;
    return top > base[j] ? top - base[j] : 0;
}

static long long fill_sum(const plan_ctx *c, const long long *base, long long level, bool capped)
{
    long long s = 0;
    for (int k = 0; k < c->n_place; k++)
        s += fill_of(c, base, c->place[k], level, capped);
    return s;
}

/* Pours k monitors onto the placeable nodes (k no more than fits under the limits when
 * capped): every node below the highest level T that k reaches rises to T, then the remainder
 * rises to T+1 on the lowest node ids that can.  T is found by bisection, since fill_sum grows
 * with the level.  Adds the counts to quota[] and raises base[]. */
static void pour(const plan_ctx *c, long long *base, long long k, bool capped, int *quota)
{
    if (k <= 0)
        return;
    long long lo = LLONG_MAX, hi = 0;
    for (int q = 0; q < c->n_place; q++) {
        int j = c->place[q];
        long long top = capped ? c->limit[j] : base[j];
        lo = base[j] < lo ? base[j] : lo;
        hi = top > hi ? top : hi;
    }
    if (!capped)
        hi += k;
    if (hi < lo)
        hi = lo;
    while (lo < hi) { /* the largest T with fill_sum(T) <= k; fill_sum(lo) is 0 */
        long long mid = lo + (hi - lo + 1) / 2;
        if (fill_sum(c, base, mid, capped) <= k)
            lo = mid;
        else
            hi = mid - 1;
    }
    long long left = k;
    for (int q = 0; q < c->n_place; q++) {
        int j = c->place[q];
        long long f = fill_of(c, base, j, lo, capped);
        quota[j] += (int)f;
        base[j] += f;
        left -= f;
    }
    for (int q = 0; q < c->n_place && left > 0; q++) { /* place[] is in node-id order */
        int j = c->place[q];
        if (base[j] == lo && (!capped || c->limit[j] > lo)) {
            quota[j]++;
            base[j]++;
            left--;
        }
    }
}

/* How many of k monitors each placeable node receives (quota[], zeroed here), and adds them to
 * the loads: even under the limits while any node has room, the rest evenly over the limits.
 * Returns how many go over a limit.  -1 on allocation failure. */
static long long even_quotas(plan_ctx *c, long long k, int *quota)
{
    long long *base = malloc((size_t)(c->n > 0 ? c->n : 1) * sizeof(long long));
    if (!base)
        return -1;
    memset(quota, 0, (size_t)(c->n > 0 ? c->n : 1) * sizeof(int));
    long long room = 0;
    for (int q = 0; q < c->n_place; q++) {
        int j = c->place[q];
        base[j] = c->load[j];
        room += c->limit[j] > c->load[j] ? c->limit[j] - c->load[j] : 0;
    }
    long long under = k < room ? k : room;
    pour(c, base, under, true, quota);
    pour(c, base, k - under, false, quota);
    for (int q = 0; q < c->n_place; q++)
        c->load[c->place[q]] += quota[c->place[q]];
    free(base);
    return k - under;
}

/* Hands out quotas: a monitor goes to the node its id hashes to among the nodes with a quota
 * (in node-id order), or to the next one along that still has some.  "Next with some left" is
 * a union-find over the slots (path compression), so a pick costs O(1) amortised however many
 * nodes there are.  Deterministic, and independent of the order nodes are listed in. */
typedef struct {
    int n;         /* slots: nodes with a quota, in node-id order */
    int *node;     /* [n] node index of the slot */
    int *left;     /* [n] monitors the slot still takes */
    int *next;     /* [n] a slot at or after this one (cyclically) closer to one with room */
    long long total;
} quota_picker;

static void picker_free(quota_picker *p)
{
    free(p->node);
    free(p->left);
    free(p->next);
    memset(p, 0, sizeof(*p));
}

static int picker_init(quota_picker *p, const plan_ctx *c, const int *quota)
{
    memset(p, 0, sizeof(*p));
    size_t nn = (size_t)(c->n_place > 0 ? c->n_place : 1);
    p->node = malloc(nn * sizeof(int));
    p->left = malloc(nn * sizeof(int));
    p->next = malloc(nn * sizeof(int));
    if (!p->node || !p->left || !p->next) {
        picker_free(p);
        return -1;
    }
    for (int q = 0; q < c->n_place; q++) {
        int j = c->place[q];
        if (quota[j] <= 0)
            continue;
        p->node[p->n] = j;
        p->left[p->n] = quota[j];
        p->next[p->n] = p->n;
        p->total += quota[j];
        p->n++;
    }
    return 0;
}

/* The node for monitor key mkey; -1 once every quota is used up (callers take exactly the sum
 * of the quotas, so that never happens). */
static int picker_take(quota_picker *p, uint64_t mkey)
{
    if (p->total <= 0)
        return -1;
    int i = (int)(((mkey >> 32) * (uint64_t)p->n) >> 32);
    int root = i;
    while (p->next[root] != root)
        root = p->next[root];
    while (p->next[i] != root) {
        int up = p->next[i];
        p->next[i] = root;
        i = up;
    }
    p->total--;
    if (--p->left[root] == 0)
        p->next[root] = (root + 1) % p->n; /* full: point along (some slot has room) */
    return p->node[root];
}

/* Even placement of k monitors in one go: quotas, then a picker over them.  Returns the
 * number placed over a limit, -1 on allocation failure. */
static long long place_evenly(plan_ctx *c, long long k, quota_picker *p)
{
    int *quota = malloc((size_t)(c->n > 0 ? c->n : 1) * sizeof(int));
    if (!quota)
        return -1;
    long long over = even_quotas(c, k, quota);
    if (over >= 0 && picker_init(p, c, quota) != 0)
        over = -1;
    free(quota);
    return over;
}

/* ======================================================================================== */
/* Result handling                                                                          */
/* ======================================================================================== */

void plan_options_default(plan_options *o)
{
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
    mv->expect_active = m->active ? 1 : 0;
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

/* Our overrides on inactive monitors are cleared: an inactive monitor runs nowhere, so the
 * override protects nothing, and left in place it would send the monitor to a failover
 * target whenever it is switched on again, long after its home came back.  Costs no load. */
static void converge_inactive(const plan_ctx *c, plan_result *r)
{
    const plan_view *v = c->v;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active && m->over >= 0 && m->ours) {
            push_move(r, v, i, MOVE_CLEAR_OVERRIDE, -1, false);
            r->n_inactive_cleared++;
        }
    }
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

/* A monitor the failover must move: active, not pinned, running on a node that is not
 * placeable. */
static inline bool needs_failover(const plan_ctx *c, const plan_monitor *m)
{
    int32_t eff = plan_effective(m);
    return m->active && !is_pinned(m) && eff >= 0 && !c->placeable[eff] &&
           !c->v->nodes[eff].keep;
}

/* Our override on a dead node goes home when the home may take reverts and has room. */
static inline bool fails_over_home(const plan_ctx *c, const plan_options *o,
                                   const plan_monitor *m)
{
    return m->over >= 0 && home_takes_revert(c, o, m) && c->load[m->home] < c->limit[m->home];
}

/* Moves one monitor off its dead effective node to `to`: clearing the override instead when
 * `to` is its home, which leaves the same effective node without an override to revert. */
static void push_failover(plan_ctx *c, plan_result *r, size_t i, int32_t to)
{
    const plan_monitor *m = &c->v->monitors[i];
    if (to == m->home)
        push_move(r, c->v, i, MOVE_CLEAR_OVERRIDE, -1, false);
    else
        push_move(r, c->v, i, MOVE_SET_OVERRIDE, to, false);
    c->load[plan_effective(m)]--;
    r->n_failover++;
}

/* Every active, unpinned monitor whose effective node is not placeable gets a new one.  First
 * our overrides on dead nodes whose home may take them back go home (lowest id first, while the
 * home has room); then the rest are placed evenly over the placeable nodes. */
static int converge_failover(plan_ctx *c, const plan_options *o, plan_result *r,
                             size_t n_fail)
{
    const plan_view *v = c->v;
    size_t home_first = r->n_moves;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (needs_failover(c, m) && fails_over_home(c, o, m)) {
            c->load[m->home]++;
            push_failover(c, r, i, m->home);
        }
    }
    size_t home_end = r->n_moves, rest = n_fail - (home_end - home_first);
    if (rest == 0)
        return 0;
    quota_picker p;
    long long over = place_evenly(c, (long long)rest, &p);
    if (over < 0)
        return -1;
    r->n_over_capacity += (int)over;
    size_t h = home_first; /* the moves home, in monitor order like this loop */
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!needs_failover(c, m))
            continue;
        if (h < home_end && r->moves[h].monitor_index == i)
            h++;
        else
            push_failover(c, r, i, picker_take(&p, monitor_key(m->id)));
    }
    picker_free(&p);
    return 0;
}

/* Active monitors with neither home nor override get a home, placed evenly. */
static int converge_adopt(plan_ctx *c, plan_result *r, size_t n_adopt)
{
    const plan_view *v = c->v;
    quota_picker p;
    long long over = place_evenly(c, (long long)n_adopt, &p);
    if (over < 0)
        return -1;
    r->n_over_capacity += (int)over;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active || m->home >= 0 || m->over >= 0)
            continue;
        push_move(r, v, i, MOVE_SET_HOME, picker_take(&p, monitor_key(m->id)), false);
        r->n_adopt++;
    }
    picker_free(&p);
    return 0;
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
    size_t n_fail = 0, n_adopt = 0, n_rev = 0, n_inactive = 0;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active) {
            n_inactive += m->over >= 0 && m->ours;
            continue;
        }
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
    int rc = -1;
    if (result_reserve(r, n_fail + n_adopt + n_rev + n_inactive) != 0)
        goto out;
    if (n_inactive)
        converge_inactive(&c, r);
    rc = 0;
    if (c.n_place == 0) {
        /* Nowhere to go: move nothing (monitors on a draining node keep running there) and
         * say how many wait; the next plan retries when a node becomes placeable. */
        r->n_no_target = (int)(n_fail + n_adopt);
        goto out;
    }
    converge_reverts(&c, o, r);
    if (n_fail && converge_failover(&c, o, r, n_fail) != 0)
        rc = -1;
    else if (n_adopt && converge_adopt(&c, r, n_adopt) != 0)
        rc = -1;
out:
    ctx_free(&c);
    return rc;
}

/* ======================================================================================== */
/* Force rebalance all                                                                      */
/* ======================================================================================== */

int plan_force_all(const plan_view *v, const plan_options *o, plan_result *r)
{
    (void)o;
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
    quota_picker p;
    long long over = -1;
    if (result_reserve(r, n_place_me) == 0)
        over = place_evenly(&c, (long long)n_place_me, &p);
    if (over < 0) {
        ctx_free(&c);
        return -1;
    }
    r->n_over_capacity = (int)over;
    for (size_t i = 0; i < v->n_monitors; i++) {
        const plan_monitor *m = &v->monitors[i];
        if (!m->active || is_pinned(m))
            continue;
        int to = picker_take(&p, monitor_key(m->id));
        if (to == m->home && m->over < 0)
            continue; /* already where it belongs */
        push_move(r, v, i, MOVE_SET_HOME, to, m->over >= 0);
        if (m->home < 0)
            r->n_adopt++;
        else
            r->n_rebalance++;
    }
    picker_free(&p);
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

/* A binary heap of node indexes, ordered by one measure of the band (most first, ties to the
 * lower node id, exactly as a scan over place[] keeping the first maximum would choose).  The
 * rebalance only ever lowers the measure of the node on top, so one sift-down per move keeps
 * it ordered: O(log nodes) per move instead of a scan of every node. */
typedef enum { BY_EXCESS, BY_DEFICIT, BY_ROOM, BY_ABOVE_LO } band_measure;

typedef struct {
    const plan_ctx *c;
    const bounds *b;
    band_measure by;
    int *a;
    int n;
} node_heap;

static int measure(const node_heap *h, int j)
{
    int l = h->c->load[j];
    switch (h->by) {
    case BY_EXCESS: return l - h->b[j].hi;
    case BY_DEFICIT: return h->b[j].lo - l;
    case BY_ROOM: return h->b[j].hi - l;
    default: return l - h->b[j].lo;
    }
}

static bool heap_before(const node_heap *h, int x, int y)
{
    int mx = measure(h, x), my = measure(h, y);
    return mx > my || (mx == my && h->c->rank[x] < h->c->rank[y]);
}

static void heap_sift_down(node_heap *h, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, best = i;
        if (l < h->n && heap_before(h, h->a[l], h->a[best]))
            best = l;
        if (r < h->n && heap_before(h, h->a[r], h->a[best]))
            best = r;
        if (best == i)
            return;
        int t = h->a[i];
        h->a[i] = h->a[best];
        h->a[best] = t;
        i = best;
    }
}

/* Every placeable node whose measure is positive (and, for donors, with a movable monitor). */
static void heap_build(node_heap *h, band_measure by, const int *movable, const int *out)
{
    h->by = by;
    h->n = 0;
    for (int k = 0; k < h->c->n_place; k++) {
        int j = h->c->place[k];
        if (measure(h, j) > 0 && (!movable || movable[j] > out[j]))
            h->a[h->n++] = j;
    }
    for (int i = h->n / 2 - 1; i >= 0; i--)
        heap_sift_down(h, i);
}

/* The top node, after dropping those whose measure fell to zero or (donors) that have no
 * movable monitor left; -1 when none is left. */
static int heap_top(node_heap *h, const int *movable, const int *out)
{
    while (h->n > 0) {
        int j = h->a[0];
        if (measure(h, j) > 0 && (!movable || movable[j] > out[j]))
            return j;
        h->a[0] = h->a[--h->n];
        heap_sift_down(h, 0);
    }
    return -1;
}

/* Decides how many monitors leave (out) and arrive at (in) each placeable node, one move at a
 * time so loads level out: while some node is above hi and has a movable monitor, take from the
 * one most above hi and give to the one most below lo, or else to the one with the most room
 * under hi; once no excess can move, fill nodes below lo from the node most above its lo.
 * Returns the number of moves, or (size_t)-1 on allocation failure. */
static size_t rebalance_quotas(const plan_ctx *c, const bounds *b, const int *movable, int *out,
                               int *in)
{
    int *load = c->load;
    size_t moves = 0, nn = (size_t)(c->n_place > 0 ? c->n_place : 1);
    node_heap donors = {c, b, BY_EXCESS, malloc(nn * sizeof(int)), 0};
    node_heap takers = {c, b, BY_DEFICIT, malloc(nn * sizeof(int)), 0};
    if (!donors.a || !takers.a) {
        moves = (size_t)-1;
        goto done;
    }
    /* Excess goes first to deficits, then to room under hi.  A donor stays above hi and a taker
     * at or below hi, so no node ever enters another heap's set while a phase runs. */
    heap_build(&donors, BY_EXCESS, movable, out);
    heap_build(&takers, BY_DEFICIT, NULL, NULL);
    bool to_room = false;
    for (;;) {
        int donor = heap_top(&donors, movable, out);
        if (donor < 0)
            break;
        int to = heap_top(&takers, NULL, NULL);
        if (to < 0 && !to_room) {
            heap_build(&takers, BY_ROOM, NULL, NULL); /* deficits never come back */
            to_room = true;
            to = heap_top(&takers, NULL, NULL);
        }
        if (to < 0)
            goto done; /* excess left, but nowhere below hi to put it */
        out[donor]++;
        in[to]++;
        load[donor]--;
        load[to]++;
        moves++;
        heap_sift_down(&donors, 0);
        heap_sift_down(&takers, 0);
    }
    /* No excess can move any more: fill what is below lo from the nodes most above lo. */
    if (to_room)
        goto done; /* the deficits were all filled */
    heap_build(&donors, BY_ABOVE_LO, movable, out);
    for (;;) {
        int to = heap_top(&takers, NULL, NULL);
        int donor = to < 0 ? -1 : heap_top(&donors, movable, out);
        if (donor < 0)
            break;
        out[donor]++;
        in[to]++;
        load[donor]--;
        load[to]++;
        moves++;
        heap_sift_down(&donors, 0);
        heap_sift_down(&takers, 0);
    }
done:
    free(donors.a);
    free(takers.a);
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
 * goes: the receivers' quotas, handed out by a quota_picker in monitor id order. */
static int rebalance_pick(const plan_ctx *c, const int *out, int *in, plan_result *r)
{
    const plan_view *v = c->v;
    int n = c->n, rc = -1;
    size_t *start = calloc((size_t)n + 1, sizeof(size_t)); /* bucket of donor j: [start[j], start[j+1]) */
    size_t *fill = calloc((size_t)n, sizeof(size_t));
    quota_picker p = {0};
    uint64_t *chosen = calloc(v->n_monitors / 64 + 1, sizeof(uint64_t)); /* bitmap by index */
    cand *cands = NULL;
    if (!start || !fill || !chosen)
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
    /* calloc, not malloc: the counting pass above sizes every bucket exactly, which the static
     * analyzer cannot follow; zeroed memory costs nothing here and makes that moot */
    cands = calloc(total ? total : 1, sizeof(cand));
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

    if (picker_init(&p, c, in) != 0)
        goto done;
    for (size_t i = 0; i < v->n_monitors; i++) {
        if (!((chosen[i / 64] >> (i % 64)) & 1))
            continue;
        push_move(r, v, i, MOVE_SET_HOME, picker_take(&p, monitor_key(v->monitors[i].id)),
                  false);
        r->n_rebalance++;
    }
    rc = 0;
done:
    free(cands);
    free(chosen);
    picker_free(&p);
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
    if (n == (size_t)-1)
        goto done;
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
