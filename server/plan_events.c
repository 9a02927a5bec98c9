/* plan_events.c — events for applied moves (see plan_events.h). */
#include "plan_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static kg_event *push(kg_event **evs, int *n, int *cap)
{
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 8;
        kg_event *g = realloc(*evs, (size_t)nc * sizeof *g);
        if (!g)
            return NULL;
        *evs = g;
        *cap = nc;
    }
    kg_event *e = &(*evs)[(*n)++];
    memset(e, 0, sizeof *e);
    return e;
}

static void copy_name(char *dst, size_t len, const kg_nametab *tab, int32_t idx)
{
    const char *s = nametab_name(tab, idx);
    snprintf(dst, len, "%s", s ? s : "");
}

int plan_events(const plan_move *moves, size_t n, const kg_nametab *tab,
                const plan_events_node *nodes, bool truncated, int64_t duration_ms,
                kg_event **out)
{
    *out = NULL;
    int nn = tab->n;
    int *fo = calloc((size_t)nn + 1, sizeof *fo);
    int *rv = calloc((size_t)nn + 1, sizeof *rv);
    int32_t *first_to = malloc(((size_t)nn + 1) * sizeof *first_to);
    bool *several = calloc((size_t)nn + 1, sizeof *several);
    kg_event *evs = NULL;
    int n_ev = 0, cap = 0, adopt = 0;
    if (!fo || !rv || !first_to || !several)
        goto oom;
    for (int i = 0; i < nn; i++)
        first_to[i] = -1;
    for (size_t i = 0; i < n; i++) {
        const plan_move *m = &moves[i];
        if (!m->expect_active)
            continue; /* our override cleared on a paused monitor: neither failover nor revert */
        int32_t from = policy_move_from(m), to = policy_move_to(m);
        bool from_placeable = from >= 0 && from < nn && node_state_placeable(nodes[from].state);
        switch (policy_classify_move(m, from_placeable)) {
        case MOVE_IS_ADOPTION:
            adopt++;
            break;
        case MOVE_IS_REVERT:
            if (m->expect_home >= 0 && m->expect_home < nn)
                rv[m->expect_home]++;
            break;
        case MOVE_IS_REBALANCE:
            break;
        case MOVE_IS_FAILOVER:
            if (from < 0 || from >= nn)
                break;
            fo[from]++;
            if (first_to[from] < 0)
                first_to[from] = to;
            else if (first_to[from] != to)
                several[from] = true;
            break;
        }
    }
    for (int i = 0; i < nn; i++) {
        const char *name = nametab_name(tab, i);
        if (fo[i]) {
            kg_event *e = push(&evs, &n_ev, &cap);
            if (!e)
                goto oom;
            e->kind = EV_FAILOVER;
            e->count = fo[i];
            e->duration_ms = duration_ms;
            copy_name(e->node, sizeof e->node, tab, i);
            copy_name(e->from, sizeof e->from, tab, i);
            if (several[i])
                snprintf(e->to, sizeof e->to, "several");
            else
                copy_name(e->to, sizeof e->to, tab, first_to[i]);
            const char *reason = nodes[i].reason ? nodes[i].reason : "";
            snprintf(e->reason, sizeof e->reason, "%s is %s%s%s", name,
                     nodes[i].known ? node_state_name(nodes[i].state) : "not in the node table",
                     reason[0] ? ": " : "", reason);
        }
        if (rv[i]) {
            kg_event *e = push(&evs, &n_ev, &cap);
            if (!e)
                goto oom;
            e->kind = EV_REVERT;
            e->count = rv[i];
            e->duration_ms = duration_ms;
            copy_name(e->node, sizeof e->node, tab, i);
            snprintf(e->from, sizeof e->from, "overrides");
            copy_name(e->to, sizeof e->to, tab, i);
            snprintf(e->reason, sizeof e->reason,
                     "%s stable for the hold-down: its monitors return home%s", name,
                     truncated ? " (batch; more to follow)" : "");
        }
    }
    if (adopt) {
        kg_event *e = push(&evs, &n_ev, &cap);
        if (!e)
            goto oom;
        e->kind = EV_ADOPTION;
        e->count = adopt;
        e->duration_ms = duration_ms;
        snprintf(e->reason, sizeof e->reason,
                 "%d active monitors had no node and were given a home", adopt);
    }
    free(fo);
    free(rv);
    free(first_to);
    free(several);
    *out = evs;
    return n_ev;
oom:
    free(fo);
    free(rv);
    free(first_to);
    free(several);
    free(evs);
    return -1;
}
