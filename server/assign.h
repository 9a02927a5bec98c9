/* assign.h — the assignment planner.  Pure: a view of nodes and monitors goes
 * in, a list of moves comes out.  It never reads or writes storage, logs or looks at a clock;
 * the same input always yields the same moves, on any controller.
 *
 * Vocabulary: a monitor's *home* is monitor.node_id, its *override* monitor.assigned_node,
 * its *effective node* COALESCE(override, home).  An override is *ours* when kumaguard wrote
 * it (recorded in kumaguard_override) and still holds the value we wrote; any other override
 * is a manual *pin* and is never changed by a plan.
 *
 * Node and monitor references are indexes into plan_view.nodes; -1 means NULL.  Names that
 * appear in monitor rows but not in the node table are still listed as nodes (state UNKNOWN,
 * not placeable), so every reference is an index. */
#ifndef KG_ASSIGN_H
#define KG_ASSIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "types.h"

typedef struct {
    const char *id;        /* node_id; used for deterministic hashing and tie-breaks */
    node_state state;
    int limit;             /* monitor capacity */
    bool revert_ok;        /* online and stable for the hold-down: our overrides may go home */
    bool keep;             /* its monitors stay where they are and nothing new is placed on it,
                              whatever its state (not yet proven after a start; held by the
                              panic guard) */
} plan_node;

typedef struct {
    int64_t id;            /* monitor.id */
    int32_t home;          /* node index or -1 */
    int32_t over;          /* node index or -1 */
    uint8_t active;        /* monitor.active = 1 */
    uint8_t ours;          /* override written by kumaguard (only meaningful when over >= 0) */
} plan_monitor;

typedef struct {
    const plan_node *nodes;
    int n_nodes;
    const plan_monitor *monitors; /* sorted by id ascending */
    size_t n_monitors;
} plan_view;

typedef enum {
    MOVE_SET_OVERRIDE = 0, /* assigned_node := to (failover target); recorded as ours */
    MOVE_CLEAR_OVERRIDE,   /* assigned_node := NULL (our override goes home) */
    MOVE_SET_HOME          /* node_id := to (rebalance, adoption, force); override unchanged
                              unless clear_override is set */
} plan_move_kind;

typedef struct {
    int64_t monitor_id;
    uint32_t monitor_index; /* index into plan_view.monitors */
    uint8_t kind;           /* plan_move_kind */
    uint8_t clear_override; /* MOVE_SET_HOME: also clear our override (force rebalance) */
    /* guard: the row is only changed if it still has these values */
    uint8_t expect_active;  /* 1 for every move of a running monitor; 0 only for clearing our
                               override on an inactive one (so a monitor switched on or off
                               meanwhile is skipped, never given an override) */
    int32_t expect_home;
    int32_t expect_over;
    int32_t to;             /* node index (-1 for CLEAR_OVERRIDE) */
} plan_move;

typedef struct {
    plan_move *moves;
    size_t n_moves;
    size_t cap_moves;
    /* what the plan leads to */
    int n_failover;        /* monitors moved off non-placeable nodes */
    int n_revert;          /* our overrides cleared */
    int n_adopt;           /* homeless monitors given a home */
    int n_rebalance;       /* home changes for balance */
    int n_over_capacity;   /* monitors placed on a node already at its limit */
    int n_no_target;       /* monitors that need a node but no node is placeable */
    int n_pinned_stranded; /* pinned monitors whose pin points at a non-routable node */
    int n_inactive_cleared;/* our overrides cleared on inactive monitors (they run nowhere) */
    bool reverts_truncated;/* more reverts were possible than the batch allowed */
} plan_result;

typedef struct {
    int revert_batch;      /* at most this many reverts per plan (0 = no reverts) */
    double tolerance;      /* rebalance: every placeable node within mean*(1±tolerance) */
} plan_options;

void plan_options_default(plan_options *o);
void plan_result_init(plan_result *r);
void plan_result_free(plan_result *r);

/* Even placement, used wherever monitors are placed (failover, adoption, force, the receiving
 * side of a rebalance): k monitors fill the placeable nodes like water, least-loaded first, up
 * to an even level — never above a node's limit while another node has room under its own;
 * only when every node is full does the rest go over the limits, again least-loaded first.
 * Where the level leaves a remainder, the lower node ids take one more.  The resulting loads
 * are exactly those of placing the monitors one at a time on the least-loaded node (ties to
 * the lower id), computed in O(nodes x log) instead of O(k x nodes).  Which monitor goes to
 * which node is then a hash of the monitor id over the nodes still short, so the choice does
 * not depend on the order the nodes are listed in. */

/* Failover + revert + adoption in one pass: monitors whose effective node is not placeable
 * (offline, unknown, recovering, draining, maintenance) get an override to a placeable node
 * (our override on a dead node goes home instead when its home may take reverts and has
 * room); our overrides whose home is revert_ok are cleared (up to revert_batch); active
 * monitors with neither home nor override get a home; our overrides on inactive monitors are
 * cleared (an inactive monitor never keeps an override of ours).  Manual pins are left alone
 * (counted as stranded).  Returns 0, or -1 on allocation failure. */
int plan_converge(const plan_view *v, const plan_options *o, plan_result *r);

/* Fewest home changes that bring every placeable node within tolerance of the mean effective
 * load (only unpinned monitors without an override move). */
int plan_rebalance(const plan_view *v, const plan_options *o, plan_result *r);

/* Recomputes every unpinned active monitor's home from scratch (even placement over the
 * pinned load) and clears our overrides.  Deterministic; a second run moves nothing. */
int plan_force_all(const plan_view *v, const plan_options *o, plan_result *r);

/* Effective node index of a monitor (-1 = runs nowhere). */
static inline int32_t plan_effective(const plan_monitor *m)
{
    return m->over >= 0 ? m->over : m->home;
}

/* Counts active monitors per effective node into load[n_nodes]. */
void plan_count_load(const plan_view *v, int *load);

#endif
