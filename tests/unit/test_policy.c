/* test_policy.c — the controller's small rules (policy.c) and move events (plan_events.c):
 * follower mirroring, the automatic rebalance trigger, the database back-off, and how moves
 * become failover / revert / adoption events. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "plan_events.h"
#include "policy.h"

Test(policy, follower_mirrors_operator_states_and_their_end)
{
    cr_assert_eq(policy_follower_state(NODE_ONLINE, NODE_MAINTENANCE), NODE_MAINTENANCE);
    cr_assert_eq(policy_follower_state(NODE_OFFLINE, NODE_DRAINING), NODE_DRAINING);
    cr_assert_eq(policy_follower_state(NODE_MAINTENANCE, NODE_MAINTENANCE), NODE_UNKNOWN,
                 "already mirrored: nothing to do");
    cr_assert_eq(policy_follower_state(NODE_MAINTENANCE, NODE_ONLINE), NODE_ONLINE,
                 "lifted by the leader: probes decide again (enable)");
    cr_assert_eq(policy_follower_state(NODE_DRAINING, NODE_OFFLINE), NODE_ONLINE);
    /* probe-driven states are the follower's own */
    cr_assert_eq(policy_follower_state(NODE_OFFLINE, NODE_ONLINE), NODE_UNKNOWN);
    cr_assert_eq(policy_follower_state(NODE_ONLINE, NODE_OFFLINE), NODE_UNKNOWN);
    cr_assert_eq(policy_follower_state(NODE_SUSPECT, NODE_RECOVERING), NODE_UNKNOWN);
}

Test(policy, auto_rebalance_fires_on_spread_only_when_settled)
{
    int loads[3] = {100, 100, 10};
    node_state st[3] = {NODE_ONLINE, NODE_ONLINE, NODE_ONLINE};
    double spread;
    cr_assert_not(policy_auto_rebalance(loads, st, 3, 0, &spread), "0 = off");
    cr_assert(policy_auto_rebalance(loads, st, 3, 0.5, &spread));
    cr_assert_float_eq(spread, 90.0 / 70.0, 1e-9);
    cr_assert_not(policy_auto_rebalance(loads, st, 3, 2.0, &spread), "below the threshold");
    st[2] = NODE_RECOVERING;
    cr_assert_not(policy_auto_rebalance(loads, st, 3, 0.5, NULL), "a recovery is in flight");
    st[2] = NODE_MAINTENANCE;
    int even[3] = {100, 100, 0};
    cr_assert_not(policy_auto_rebalance(even, st, 3, 0.5, NULL),
                  "maintenance nodes are not counted");
    int one[1] = {5};
    node_state s1[1] = {NODE_ONLINE};
    cr_assert_not(policy_auto_rebalance(one, s1, 1, 0.1, NULL), "one node cannot be spread");
}

Test(policy, db_backoff_doubles_to_the_cap_with_bounded_jitter)
{
    int64_t d = 0;
    int64_t expect[] = {500, 1000, 2000, 4000, 4000, 4000};
    for (int i = 0; i < 6; i++) {
        int64_t base = expect[i];
        d = policy_db_backoff(i == 0 ? 0 : expect[i - 1], 4000, (uint32_t)(i * 7919));
        cr_assert(d >= base && d <= base + base / 5, "step %d: %lld not in [%lld, +20%%]", i,
                  (long long)d, (long long)base);
    }
}

static plan_move mv(plan_move_kind k, int32_t to, int32_t home, int32_t over)
{
    return (plan_move){.kind = (uint8_t)k, .to = to, .expect_home = home, .expect_over = over,
                       .expect_active = 1};
}

Test(policy, move_classes)
{
    plan_move f = mv(MOVE_SET_OVERRIDE, 2, 0, -1);
    cr_assert_eq(policy_move_from(&f), 0);
    cr_assert_eq(policy_move_to(&f), 2);
    cr_assert_eq(policy_classify_move(&f, false), MOVE_IS_FAILOVER);
    plan_move r = mv(MOVE_CLEAR_OVERRIDE, -1, 0, 2);
    cr_assert_eq(policy_move_from(&r), 2);
    cr_assert_eq(policy_move_to(&r), 0);
    cr_assert_eq(policy_classify_move(&r, true), MOVE_IS_REVERT);
    cr_assert_eq(policy_classify_move(&r, false), MOVE_IS_FAILOVER,
                 "leaving a dead failover target for home is a failover");
    plan_move a = mv(MOVE_SET_HOME, 1, -1, -1);
    cr_assert_eq(policy_classify_move(&a, false), MOVE_IS_ADOPTION);
    plan_move b = mv(MOVE_SET_HOME, 1, 0, -1);
    cr_assert_eq(policy_classify_move(&b, true), MOVE_IS_REBALANCE);
    plan_move keep = mv(MOVE_SET_HOME, 1, 0, 2);
    cr_assert_eq(policy_move_to(&keep), 2, "a home change under an override runs where it ran");
}

Test(policy, plan_events_one_per_source_node)
{
    kg_nametab tab;
    nametab_init(&tab);
    nametab_intern(&tab, "n1", 2);
    nametab_intern(&tab, "n2", 2);
    nametab_intern(&tab, "n3", 2);
    plan_events_node nodes[3] = {
        {.state = NODE_OFFLINE, .known = true, .reason = "connection refused"},
        {.state = NODE_ONLINE, .known = true, .reason = ""},
        {.state = NODE_ONLINE, .known = true, .reason = ""},
    };
    plan_move moves[] = {
        mv(MOVE_SET_OVERRIDE, 1, 0, -1), mv(MOVE_SET_OVERRIDE, 2, 0, -1),
        mv(MOVE_SET_OVERRIDE, 1, 0, -1), mv(MOVE_CLEAR_OVERRIDE, -1, 2, 1),
        mv(MOVE_SET_HOME, 1, -1, -1),
    };
    kg_event *ev = NULL;
    int n = plan_events(moves, 5, &tab, nodes, true, 42, &ev);
    cr_assert_eq(n, 3);
    cr_assert_eq(ev[0].kind, EV_FAILOVER);
    cr_assert_eq(ev[0].count, 3);
    cr_assert_str_eq(ev[0].from, "n1");
    cr_assert_str_eq(ev[0].to, "several");
    cr_assert_str_eq(ev[0].reason, "n1 is offline: connection refused");
    cr_assert_eq(ev[0].duration_ms, 42);
    cr_assert_eq(ev[1].kind, EV_REVERT);
    cr_assert_str_eq(ev[1].node, "n3");
    cr_assert(strstr(ev[1].reason, "more to follow") != NULL);
    cr_assert_eq(ev[2].kind, EV_ADOPTION);
    cr_assert_eq(ev[2].count, 1);
    free(ev);
    nametab_free(&tab);
}

Test(policy, plan_events_names_a_node_missing_from_the_table)
{
    kg_nametab tab;
    nametab_init(&tab);
    nametab_intern(&tab, "gone", 4);
    nametab_intern(&tab, "n2", 2);
    plan_events_node nodes[2] = {{.state = NODE_UNKNOWN, .known = false, .reason = ""},
                                 {.state = NODE_ONLINE, .known = true, .reason = ""}};
    plan_move moves[] = {mv(MOVE_SET_OVERRIDE, 1, 0, -1)};
    kg_event *ev = NULL;
    int n = plan_events(moves, 1, &tab, nodes, false, 0, &ev);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ev[0].to, "n2");
    cr_assert_str_eq(ev[0].reason, "gone is not in the node table");
    free(ev);
    nametab_free(&tab);
}
