/* panic.c — the panic guard and the confirmation round (rules in panic.h).
 *
 * Owns: the guard's verdict.  Must not: probe, log, read a clock or store anything; the
 * controller feeds it and carries out what it says. */
#include "panic.h"

#include <stdio.h>
#include <string.h>

/* How long past one probe timeout a confirmation round waits for the last answer. */
#define CONFIRM_SLACK_MS 250

void panic_init(panic_state *st) { memset(st, 0, sizeof *st); }

static bool over_threshold(const panic_cfg *c, int failing, int total)
{
    if (total == 0 || failing == 0)
        return false;
    if (failing == total)
        return true;
    return failing >= 2 && (double)failing > c->share * (double)total;
}

panic_change panic_update(panic_state *st, const panic_cfg *c, const panic_node *nodes, int n,
                          int64_t now_ms)
{
    int total = 0, failing = 0;
    for (int i = 0; i < n; i++) {
        if (!nodes[i].counted)
            continue;
        total++;
        if (nodes[i].failing)
            failing++;
    }
    st->failing = failing;
    st->total = total;
    bool over = over_threshold(c, failing, total);
    if (over && !st->engaged) {
        st->engaged = true;
        st->engaged_ms = now_ms;
        st->override = false;
        st->override_by[0] = 0;
        st->released = 0;
        st->next_release_ms = c->max_hold_ms > 0 ? now_ms + c->max_hold_ms : 0;
        st->settle_until_ms = 0;
        snprintf(st->reason, sizeof st->reason,
                 "%d of %d probed nodes are failing: more likely a network or controller fault "
                 "than the nodes; no monitors are moved and nginx keeps its upstream",
                 failing, total);
        return PANIC_ENGAGED;
    }
    if (!over && st->engaged) {
        st->engaged = false;
        st->override = false;
        st->override_by[0] = 0;
        st->released = 0;
        st->next_release_ms = 0;
        /* Nodes come back from a shared outage one probe at a time: moving the monitors of
         * the ones still rising would only send them back after the hold-down. */
        st->settle_until_ms = now_ms + (int64_t)(c->rise + 1) * c->interval_ms + c->timeout_ms;
        snprintf(st->reason, sizeof st->reason, "released: %d of %d probed nodes failing",
                 failing, total);
        return PANIC_RELEASED;
    }
    if (st->engaged && c->max_hold_ms > 0 && st->next_release_ms && now_ms >= st->next_release_ms &&
        st->released < failing) {
        st->released++;
        st->next_release_ms = now_ms + (c->release_interval_ms > 0 ? c->release_interval_ms : 1);
    }
    if (st->engaged)
        snprintf(st->reason, sizeof st->reason,
                 "%d of %d probed nodes are failing: more likely a network or controller fault "
                 "than the nodes; %s",
                 failing, total,
                 st->override ? "an operator allowed failover for this outage"
                 : st->released ? "holding; failing nodes are released one at a time"
                                : "no monitors are moved and nginx keeps its upstream");
    return PANIC_UNCHANGED;
}

bool panic_override(panic_state *st, const char *actor)
{
    if (!st->engaged)
        return false;
    st->override = true;
    snprintf(st->override_by, sizeof st->override_by, "%s", actor ? actor : "operator");
    return true;
}

bool panic_moves_allowed(const panic_state *st, int64_t now_ms)
{
    if (st->engaged)
        return st->override || st->released > 0;
    return now_ms >= st->settle_until_ms;
}

bool panic_freezes_routing(const panic_state *st) { return st->engaged && !st->override; }

/* Rank of failing node i in release order (earliest failure first, then id); -1 when the node
 * is not failing. */
static int release_rank(const panic_node *nodes, int n, int i)
{
    if (!nodes[i].counted || !nodes[i].failing)
        return -1;
    int rank = 0;
    for (int j = 0; j < n; j++) {
        if (j == i || !nodes[j].counted || !nodes[j].failing)
            continue;
        int64_t a = nodes[j].fail_start_ms, b = nodes[i].fail_start_ms;
        if (a < b || (a == b && strcmp(nodes[j].id ? nodes[j].id : "",
                                       nodes[i].id ? nodes[i].id : "") < 0))
            rank++;
    }
    return rank;
}

bool panic_holds_node(const panic_state *st, const panic_node *nodes, int n, int i)
{
    if (!st->engaged || st->override)
        return false;
    int rank = release_rank(nodes, n, i);
    return rank >= 0 && rank >= st->released; /* a node that is not failing has nothing held */
}

void panic_confirm_start(panic_state *st, int64_t now_ms, int64_t onset_ms)
{
    st->confirm_since_ms = now_ms;
    st->confirm_onset_ms = onset_ms > 0 && onset_ms < now_ms ? onset_ms : now_ms;
}

bool panic_confirm_pending(panic_state *st, const panic_cfg *c, const panic_node *nodes, int n,
                           int64_t now_ms)
{
    if (!st->confirm_since_ms)
        return false;
    if (now_ms >= st->confirm_since_ms + c->timeout_ms + CONFIRM_SLACK_MS) {
        st->confirm_since_ms = 0; /* some probe hangs: its timeout has passed, go on */
        return false;
    }
    /* The node that started the round was probed at confirm_since_ms, so "< onset" skips it:
     * its own next probe keeps the spacing `fall` relies on. */
    int total = 0, passed = 0;
    bool waiting = false;
    for (int i = 0; i < n; i++) {
        if (!nodes[i].counted)
            continue;
        total++;
        if (nodes[i].last_probe_ms < st->confirm_onset_ms)
            waiting = true;
        else if (!nodes[i].failing)
            passed++;
    }
    /* A quorum ends the round early: once so many nodes passed since it started that the
     * guard could not engage even if every node not yet heard from fails, the rest cannot
     * change the verdict.  With 1,000 nodes the last answers of a round come long after the
     * first half (the sweep shares the machine with the nginx reload the same change
     * triggers); with three nodes the quorum is every node, as before. */
    if (waiting && over_threshold(c, total - passed, total)) /* none passed: all may fail */
        return true;
    st->confirm_since_ms = 0;
    return false;
}

int64_t panic_next_due(const panic_state *st, const panic_cfg *c, int64_t now_ms)
{
    int64_t due = 0;
#define CONSIDER(t)                                                                             \
    do {                                                                                        \
        int64_t t_ = (t);                                                                       \
        if (t_ > now_ms && (due == 0 || t_ < due))                                              \
            due = t_;                                                                           \
    } while (0)
    if (st->confirm_since_ms)
        CONSIDER(st->confirm_since_ms + c->timeout_ms + CONFIRM_SLACK_MS);
    if (st->engaged && st->next_release_ms)
        CONSIDER(st->next_release_ms);
    if (!st->engaged && st->settle_until_ms)
        CONSIDER(st->settle_until_ms);
#undef CONSIDER
    return due;
}
