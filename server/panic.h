/* panic.h — the panic guard and the confirmation round.  Pure: the nodes'
 * probe picture and the clock go in, a verdict comes out; it never probes, logs or stores.
 *
 * Why a guard: when most nodes fail at once, the fault is more likely ours (the controller's
 * network, a resolver, a switch) than theirs.  Moving every monitor onto the one node we can
 * still reach would be the Lua version's cascade.  So:
 *
 *   engage   when every probed node is failing, or more than `share` of them (and at least
 *            two) are failing — whenever their failures started (staggered onsets count);
 *   hold     as long as that stays true: no monitor moves, nginx keeps its upstream;
 *   release  only when the failing share falls to `share` or below, and then let the nodes
 *            that are rising again finish `rise` probes (the settle window) before anything
 *            moves;
 *   move     during a long partial outage only when an operator says so (override, for this
 *            outage only), or — opt in, like Kubernetes' node controller's eviction rate — after
 *            `max_hold_ms`, one more failing node every `release_interval_ms`, the earliest
 *            failure first.
 *
 * A node is "failing" from its first failed probe (suspect) until it passes again.
 *
 * The confirmation round: when a node leaves `online`, every other probed node is probed once
 * more before anything moves (the controller triggers those probes).  If they fail too, the
 * guard engages first; if they answer, failover goes ahead a few milliseconds later.  Without
 * it, nodes whose probe phases drifted apart would be failed over one by one during a total
 * outage.  Answers that came in after the leaving node's first failed probe count for the
 * round.  It ends when every other node has answered, when so many passed that the guard
 * could not engage whatever the rest answer, or after one probe timeout. */
#ifndef KG_PANIC_H
#define KG_PANIC_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    double share;                 /* engage when failing/total > share (and failing >= 2) */
    int rise;
    int64_t interval_ms;          /* normal probe interval */
    int64_t timeout_ms;           /* probe timeout (bounds the confirmation round) */
    int64_t max_hold_ms;          /* 0 = hold until an operator overrides */
    int64_t release_interval_ms;  /* after max_hold: one more failing node per interval */
} panic_cfg;

/* One node as the guard sees it.  Only probed nodes with a usable host count. */
typedef struct {
    bool counted;                 /* probed (not in maintenance) and its host is usable */
    bool failing;                 /* last probe failed, or offline */
    int64_t fail_start_ms;        /* start of the current failure streak (0 = not failing) */
    int64_t last_probe_ms;        /* when its last probe result arrived (0 = never) */
    const char *id;               /* tie-break for the release order */
} panic_node;

typedef struct {
    bool engaged;
    int64_t engaged_ms;
    int64_t settle_until_ms;      /* after a release: no moves before this */
    bool override;                /* an operator allowed moves for the current outage */
    char override_by[64];
    int released;                 /* failing nodes released by max_hold so far */
    int64_t next_release_ms;
    int failing, total;           /* as of the last update */
    int64_t confirm_since_ms;     /* confirmation round running since (0 = none) */
    int64_t confirm_onset_ms;     /* answers from this moment on count for the round */
    char reason[224];
} panic_state;

typedef enum { PANIC_UNCHANGED = 0, PANIC_ENGAGED, PANIC_RELEASED } panic_change;

void panic_init(panic_state *st);

/* Re-evaluates the guard from the nodes' current picture.  Returns what changed. */
panic_change panic_update(panic_state *st, const panic_cfg *c, const panic_node *nodes, int n,
                          int64_t now_ms);

/* An operator allows moves while the guard holds (ends when the guard releases).
 * false when the guard is not engaged. */
bool panic_override(panic_state *st, const char *actor);

/* May monitors move at all now?  (Not while engaged without override or release, not in the
 * settle window after a release.) */
bool panic_moves_allowed(const panic_state *st, int64_t now_ms);

/* While the guard holds: must failing node i's monitors stay where they are?  false for nodes
 * that are not failing, for every node when the guard is not engaged or an operator overrode
 * it, and with max_hold for the `released` earliest-failing nodes.  `nodes` as given to
 * panic_update. */
bool panic_holds_node(const panic_state *st, const panic_node *nodes, int n, int i);

/* Should nginx keep its current upstream? (engaged and not overridden) */
bool panic_freezes_routing(const panic_state *st);

/* Confirmation round, started at now_ms because a node left; onset_ms is that node's first
 * failed probe (0 when it did not fail, e.g. drained).  A probe result that arrived after the
 * onset already tells what the round asks (the node answered, or failed, after the trouble
 * began), so only nodes with no result since the onset wait for their confirmation probe.
 * The round's timeout still runs from now_ms, when the confirmation probes were sent. */
void panic_confirm_start(panic_state *st, int64_t now_ms, int64_t onset_ms);
/* true while some other counted node has no probe result since the onset, the
 * nodes that passed since then are too few to rule the guard out, and the round is younger
 * than one probe timeout (plus a little); ends the round otherwise. */
bool panic_confirm_pending(panic_state *st, const panic_cfg *c, const panic_node *nodes, int n,
                           int64_t now_ms);

/* Earliest time a timer should wake the caller for the guard (release steps, settle end,
 * confirmation timeout); 0 = none. */
int64_t panic_next_due(const panic_state *st, const panic_cfg *c, int64_t now_ms);

#endif
