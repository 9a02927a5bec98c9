/* plan_events.h — turns applied moves into history events: one failover event per node the
 * monitors left, one revert event per node they returned to, one adoption event.  Pure: the
 * moves and what the controller knows of each node go in, events come out (without id or time,
 * which the controller stamps).
 *
 * Owns: the wording and grouping of move events.  Must not: log, store, or read a clock. */
#ifndef KG_PLAN_EVENTS_H
#define KG_PLAN_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "assign.h"
#include "nametab.h"
#include "types.h"

/* What the controller knows of the node at each nametab index. */
typedef struct {
    node_state state;          /* NODE_UNKNOWN for a name no node row has */
    bool known;                /* a node row exists */
    const char *reason;        /* last probe failure reason ("" when none) */
} plan_events_node;

/* Fills *out (malloc'd; caller frees) with the events for moves[0..n) and returns their
 * number, or -1 when out of memory.  nodes[] is indexed like tab.  Home changes between live
 * nodes (rebalancing) make no event here: the rebalance operation summarises its batches.
 * `truncated`: more reverts follow in later batches. */
int plan_events(const plan_move *moves, size_t n, const kg_nametab *tab,
                const plan_events_node *nodes, bool truncated, int64_t duration_ms,
                kg_event **out);

#endif
