/* test_health.c — the node state machine (health.c): rise/fall, suspect/recovering, operator
 * states, and the rule that one bad probe never changes routing. */
#include <criterion/criterion.h>

#include "health.h"

static const health_params P3 = {.fall = 3, .rise = 3};

static node_health online_node(void)
{
    node_health h;
    health_init(&h, NODE_ONLINE, 0);
    return h;
}

Test(health, one_bad_probe_never_changes_routing)
{
    node_health h = online_node();
    health_transition t = health_apply(&h, &P3, false, 1);
    cr_assert(t.changed);
    cr_assert_eq(t.to, NODE_SUSPECT);
    cr_assert(health_routable(&h), "a suspect node is still routed");
    cr_assert(node_state_placeable(h.state), "a suspect node keeps its monitors");
    t = health_apply(&h, &P3, true, 2);
    cr_assert_eq(h.state, NODE_ONLINE);
}

Test(health, fall_failures_take_a_node_offline_exactly)
{
    node_health h = online_node();
    health_apply(&h, &P3, false, 1);
    health_apply(&h, &P3, false, 2);
    cr_assert_eq(h.state, NODE_SUSPECT, "two of three failures: still suspect");
    health_transition t = health_apply(&h, &P3, false, 3);
    cr_assert(t.changed);
    cr_assert_eq(t.from, NODE_SUSPECT);
    cr_assert_eq(t.to, NODE_OFFLINE);
    cr_assert_not(health_routable(&h));
    cr_assert_eq(h.state_since_ms, 3);
}

Test(health, interleaved_success_resets_the_fall_count)
{
    node_health h = online_node();
    for (int i = 0; i < 20; i++) {
        health_apply(&h, &P3, false, i * 2);
        health_apply(&h, &P3, false, i * 2);
        health_apply(&h, &P3, true, i * 2 + 1);
        cr_assert_eq(h.state, NODE_ONLINE, "flapping below fall never goes offline");
    }
}

Test(health, rise_successes_bring_it_back_through_recovering)
{
    node_health h = online_node();
    for (int i = 0; i < 3; i++)
        health_apply(&h, &P3, false, i);
    cr_assert_eq(h.state, NODE_OFFLINE);
    health_transition t = health_apply(&h, &P3, true, 10);
    cr_assert_eq(t.to, NODE_RECOVERING);
    cr_assert_not(health_routable(&h), "recovering is not routed");
    health_apply(&h, &P3, true, 11);
    cr_assert_eq(h.state, NODE_RECOVERING);
    t = health_apply(&h, &P3, true, 12);
    cr_assert_eq(t.to, NODE_ONLINE);
    cr_assert(health_routable(&h));
}

Test(health, a_failure_while_recovering_goes_back_offline)
{
    node_health h;
    health_init(&h, NODE_OFFLINE, 0);
    health_apply(&h, &P3, true, 1);
    health_apply(&h, &P3, true, 2);
    health_transition t = health_apply(&h, &P3, false, 3);
    cr_assert_eq(t.to, NODE_OFFLINE);
    /* and needs the full rise again */
    health_apply(&h, &P3, true, 4);
    health_apply(&h, &P3, true, 5);
    cr_assert_eq(h.state, NODE_RECOVERING);
}

Test(health, fall_and_rise_of_one_are_immediate)
{
    health_params p = {.fall = 1, .rise = 1};
    node_health h = online_node();
    cr_assert_eq(health_apply(&h, &p, false, 1).to, NODE_OFFLINE);
    cr_assert_eq(health_apply(&h, &p, true, 2).to, NODE_ONLINE);
}

Test(health, restart_starts_from_the_persisted_state)
{
    node_health h;
    health_init(&h, NODE_OFFLINE, 0);
    cr_assert_eq(h.state, NODE_OFFLINE, "an offline node must earn rise probes");
    health_init(&h, NODE_RECOVERING, 0);
    cr_assert_eq(h.state, NODE_OFFLINE);
    health_init(&h, NODE_MAINTENANCE, 0);
    cr_assert_eq(h.state, NODE_MAINTENANCE);
    health_init(&h, NODE_UNKNOWN, 0);
    cr_assert_eq(h.state, NODE_ONLINE, "a Kuma node registers itself online");
}

Test(health, maintenance_ignores_probes_and_is_not_probed)
{
    node_health h = online_node();
    health_set_operator(&h, NODE_MAINTENANCE, 5);
    cr_assert_not(health_probed(&h));
    for (int i = 0; i < 5; i++)
        cr_assert_not(health_apply(&h, &P3, false, 6 + i).changed);
    cr_assert_eq(h.state, NODE_MAINTENANCE);
    cr_assert_not(health_routable(&h));
}

Test(health, enable_requires_rise_good_probes)
{
    node_health h = online_node();
    health_set_operator(&h, NODE_MAINTENANCE, 1);
    health_transition t = health_set_operator(&h, NODE_ONLINE, 2);
    cr_assert_eq(t.to, NODE_RECOVERING);
    health_apply(&h, &P3, true, 3);
    health_apply(&h, &P3, true, 4);
    cr_assert_eq(h.state, NODE_RECOVERING);
    health_apply(&h, &P3, true, 5);
    cr_assert_eq(h.state, NODE_ONLINE);
}

Test(health, draining_stays_routed_but_not_placeable_and_dies_like_any_node)
{
    node_health h = online_node();
    health_set_operator(&h, NODE_DRAINING, 1);
    cr_assert(health_routable(&h));
    cr_assert_not(node_state_placeable(h.state));
    health_apply(&h, &P3, false, 2);
    health_apply(&h, &P3, false, 3);
    cr_assert_eq(h.state, NODE_DRAINING, "below fall it keeps draining");
    health_apply(&h, &P3, false, 4);
    cr_assert_eq(h.state, NODE_OFFLINE);
}

Test(health, transition_flags_for_fast_probing)
{
    node_health h = online_node();
    cr_assert(health_in_transition(&h), "unproven after a start: probed fast to prove it");
    for (int i = 0; i < 3; i++)
        health_apply(&h, &P3, true, i);
    cr_assert_not(health_in_transition(&h));
    health_apply(&h, &P3, false, 1);
    cr_assert(health_in_transition(&h));
    health_apply(&h, &P3, false, 2);
    health_apply(&h, &P3, false, 3);
    cr_assert_not(health_in_transition(&h), "a node settled offline is probed normally");
    health_apply(&h, &P3, true, 4);
    cr_assert(health_in_transition(&h));
}

Test(health, suspect_is_persisted_as_online)
{
    cr_assert_str_eq(node_state_db_value(NODE_SUSPECT), "online");
    cr_assert_str_eq(node_state_db_value(NODE_OFFLINE), "offline");
    cr_assert_eq(node_state_parse("recovering"), NODE_RECOVERING);
    cr_assert_eq(node_state_parse("garbage"), NODE_UNKNOWN);
}

/* A node's own row says `online` whenever it restarts: after a start of kumaguard nothing is
 * placed on a node, and nothing reverts to it, until our probes passed `rise`. */
Test(health, a_node_starts_unproven_and_is_proven_by_rise_probes)
{
    node_health h = online_node();
    cr_assert_eq(h.state, NODE_ONLINE, "persisted online: starts online (routed, keeps monitors)");
    cr_assert_not(h.proven);
    cr_assert_not(health_placeable(&h), "nothing is placed on an unproven node");
    cr_assert_eq(health_proven_since(&h), 0, "no hold-down runs before the proof");
    health_apply(&h, &P3, true, 10);
    health_apply(&h, &P3, true, 20);
    cr_assert_not(h.proven, "two of three successes");
    health_apply(&h, &P3, false, 30);
    health_apply(&h, &P3, true, 40);
    health_apply(&h, &P3, true, 50);
    cr_assert_not(h.proven, "a failure restarts the count");
    health_apply(&h, &P3, true, 60);
    cr_assert(h.proven);
    cr_assert(health_placeable(&h));
    cr_assert_eq(health_proven_since(&h), 60, "the hold-down counts from the proof");
}

Test(health, going_offline_loses_the_proof_and_coming_back_regains_it)
{
    node_health h = online_node();
    for (int i = 0; i < 3; i++)
        health_apply(&h, &P3, true, i);
    cr_assert(h.proven);
    for (int i = 0; i < 3; i++)
        health_apply(&h, &P3, false, 10 + i);
    cr_assert_eq(h.state, NODE_OFFLINE);
    cr_assert_not(h.proven);
    for (int i = 0; i < 3; i++)
        health_apply(&h, &P3, true, 20 + i);
    cr_assert_eq(h.state, NODE_ONLINE);
    cr_assert(h.proven, "rise probes after recovering are the proof");
    cr_assert_eq(health_proven_since(&h), 22);
}

Test(health, one_failed_probe_keeps_a_proven_node_proven)
{
    node_health h = online_node();
    for (int i = 0; i < 3; i++)
        health_apply(&h, &P3, true, i);
    health_apply(&h, &P3, false, 5);
    cr_assert_eq(h.state, NODE_SUSPECT);
    cr_assert(h.proven, "suspect is still placeable: a blip is not a restart");
    health_apply(&h, &P3, true, 6);
    cr_assert(health_placeable(&h));
    cr_assert_eq(health_proven_since(&h), 2, "the proof keeps its time");
}

/* A node back from failing is told to drop the monitors that moved away before it is routed:
 * the caller holds the recovering -> online step until then. */
Test(health, the_online_step_can_be_held_until_the_node_was_told)
{
    node_health h;
    health_init(&h, NODE_OFFLINE, 0);
    health_params held = {.fall = 3, .rise = 3, .hold_online = true};
    for (int i = 0; i < 5; i++)
        health_apply(&h, &held, true, 1 + i);
    cr_assert_eq(h.state, NODE_RECOVERING, "passed rise, but held");
    cr_assert_not(health_routable(&h));
    health_transition t = health_release_hold(&h, &P3, 10);
    cr_assert(t.changed);
    cr_assert_eq(t.from, NODE_RECOVERING);
    cr_assert_eq(t.to, NODE_ONLINE);
    cr_assert(h.proven);
    cr_assert_eq(health_proven_since(&h), 10);
}

Test(health, releasing_the_hold_before_rise_changes_nothing)
{
    node_health h;
    health_init(&h, NODE_OFFLINE, 0);
    health_apply(&h, &P3, true, 1);
    cr_assert_eq(h.state, NODE_RECOVERING);
    health_transition t = health_release_hold(&h, &P3, 2);
    cr_assert_not(t.changed);
    cr_assert_eq(h.state, NODE_RECOVERING);
}
