/* test_panic.c — the panic guard and the confirmation round (panic.c), driven by a fake clock:
 * the share rule at onset and while it lasts, staggered onsets, release only when the share
 * falls, the settle window, the operator override, the opt-in maximum hold, and the
 * confirmation round skipping the node that just failed. */
#include <criterion/criterion.h>

#include "panic.h"

static const panic_cfg CFG = {.share = 0.5, .rise = 3, .interval_ms = 1000, .timeout_ms = 500,
                              .max_hold_ms = 0, .release_interval_ms = 60000};

static panic_node nodes[8];
static const char *ids[8] = {"a", "b", "c", "d", "e", "f", "g", "h"};

static void setup_nodes(int n)
{
    for (int i = 0; i < n; i++)
        nodes[i] = (panic_node){.counted = true, .id = ids[i], .last_probe_ms = 1};
}

static void fail(int i, int64_t since)
{
    nodes[i].failing = true;
    nodes[i].fail_start_ms = since;
}

static void pass(int i)
{
    nodes[i].failing = false;
    nodes[i].fail_start_ms = 0;
}

Test(panic, one_of_three_failing_is_a_node_fault_not_ours)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(3);
    fail(0, 100);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 3, 100), PANIC_UNCHANGED);
    cr_assert_not(st.engaged);
    cr_assert(panic_moves_allowed(&st, 100));
}

/* The failure the last landing had: 2 of 3 at once, the guard let go after 4 s while both
 * still failed, and 2/3 of the monitors piled onto the last node. */
Test(panic, two_of_three_hold_the_guard_for_as_long_as_they_fail)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(3);
    fail(0, 1000);
    fail(1, 1200);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 3, 1200), PANIC_ENGAGED);
    for (int64_t t = 2000; t <= 600000; t += 1000) {
        cr_assert_eq(panic_update(&st, &CFG, nodes, 3, t), PANIC_UNCHANGED);
        cr_assert(st.engaged, "still 2 of 3 failing at %lld ms", (long long)t);
        cr_assert_not(panic_moves_allowed(&st, t));
        cr_assert(panic_freezes_routing(&st));
    }
}

/* Staggered onsets count: the old rule needed both failures within one detection window. */
Test(panic, staggered_failures_engage_the_guard_too)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(3);
    fail(0, 0);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 3, 0), PANIC_UNCHANGED);
    fail(1, 120000); /* two minutes later */
    cr_assert_eq(panic_update(&st, &CFG, nodes, 3, 120000), PANIC_ENGAGED);
}

Test(panic, every_node_failing_is_a_panic_even_a_single_one)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(1);
    fail(0, 5);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 1, 5), PANIC_ENGAGED);
}

Test(panic, share_rule_needs_more_than_the_share_and_at_least_two)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(4);
    fail(0, 1);
    fail(1, 1);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 4, 1), PANIC_UNCHANGED, "2 of 4 is not > 0.5");
    fail(2, 2);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 4, 2), PANIC_ENGAGED, "3 of 4 is");
}

Test(panic, uncounted_nodes_do_not_dilute_the_share)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(5);
    nodes[3].counted = false; /* maintenance */
    nodes[4].counted = false; /* unusable host */
    fail(0, 1);
    fail(1, 1);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 5, 1), PANIC_ENGAGED, "2 of 3 counted");
    cr_assert_eq(st.total, 3);
}

Test(panic, release_only_when_the_share_falls_then_settle)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(3);
    fail(0, 0);
    fail(1, 0);
    panic_update(&st, &CFG, nodes, 3, 0);
    pass(0);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 3, 10000), PANIC_RELEASED, "1 of 3 left");
    cr_assert_not(st.engaged);
    /* settle: (rise + 1) * interval + timeout = 4500 ms */
    cr_assert_not(panic_moves_allowed(&st, 10000));
    cr_assert_not(panic_moves_allowed(&st, 14499));
    cr_assert(panic_moves_allowed(&st, 14500));
    cr_assert_eq(panic_next_due(&st, &CFG, 10000), 14500);
}

Test(panic, operator_override_allows_moves_for_this_outage_only)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(3);
    cr_assert_not(panic_override(&st, "ops"), "nothing to override when not engaged");
    fail(0, 0);
    fail(1, 0);
    panic_update(&st, &CFG, nodes, 3, 0);
    cr_assert(panic_override(&st, "ops@10.0.0.1"));
    cr_assert(panic_moves_allowed(&st, 1));
    cr_assert_not(panic_freezes_routing(&st));
    cr_assert_not(panic_holds_node(&st, nodes, 3, 0));
    cr_assert_str_eq(st.override_by, "ops@10.0.0.1");
    /* the outage ends, a new one starts: the override does not carry over */
    pass(0);
    pass(1);
    panic_update(&st, &CFG, nodes, 3, 100000);
    fail(0, 200000);
    fail(2, 200000);
    cr_assert_eq(panic_update(&st, &CFG, nodes, 3, 200000), PANIC_ENGAGED);
    cr_assert_not(st.override);
    cr_assert_not(panic_moves_allowed(&st, 200001));
}

Test(panic, max_hold_releases_failing_nodes_one_at_a_time_earliest_first)
{
    panic_cfg c = CFG;
    c.max_hold_ms = 300000;
    c.release_interval_ms = 60000;
    panic_state st;
    panic_init(&st);
    setup_nodes(4);
    fail(2, 50);
    fail(1, 10);
    fail(3, 50); /* same start as c: the id breaks the tie */
    panic_update(&st, &c, nodes, 4, 100);
    cr_assert(st.engaged);
    for (int i = 1; i < 4; i++)
        cr_assert(panic_holds_node(&st, nodes, 4, i));
    cr_assert_not(panic_holds_node(&st, nodes, 4, 0), "a healthy node holds nothing");
    panic_update(&st, &c, nodes, 4, 300099);
    cr_assert_eq(st.released, 0, "not before the max hold");
    panic_update(&st, &c, nodes, 4, 300100);
    cr_assert_eq(st.released, 1);
    cr_assert(panic_moves_allowed(&st, 300100));
    cr_assert_not(panic_holds_node(&st, nodes, 4, 1), "b failed first");
    cr_assert(panic_holds_node(&st, nodes, 4, 2));
    cr_assert(panic_holds_node(&st, nodes, 4, 3));
    panic_update(&st, &c, nodes, 4, 330000);
    cr_assert_eq(st.released, 1, "one per interval");
    panic_update(&st, &c, nodes, 4, 360100);
    cr_assert_eq(st.released, 2);
    cr_assert_not(panic_holds_node(&st, nodes, 4, 2), "c before d (same time, id order)");
    cr_assert(panic_holds_node(&st, nodes, 4, 3));
    cr_assert(panic_freezes_routing(&st), "routing stays frozen while holding");
}

Test(panic, without_max_hold_nothing_is_ever_released)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(2);
    fail(0, 0);
    fail(1, 0);
    panic_update(&st, &CFG, nodes, 2, 0);
    panic_update(&st, &CFG, nodes, 2, 24LL * 3600 * 1000);
    cr_assert_eq(st.released, 0);
    cr_assert(panic_holds_node(&st, nodes, 2, 0));
}

/* The confirmation round skips the node that just failed (probed at the round's start) and
 * waits for every other one. */
Test(panic, confirmation_waits_for_every_other_node_and_skips_the_failing_one)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(3);
    fail(0, 1000);
    nodes[0].last_probe_ms = 1000; /* the failing node: its result started the round */
    nodes[1].last_probe_ms = 900;
    nodes[2].last_probe_ms = 950;
    panic_confirm_start(&st, 1000, 0);
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 3, 1001));
    nodes[1].last_probe_ms = 1010;
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 3, 1011));
    nodes[2].last_probe_ms = 1020;
    cr_assert_not(panic_confirm_pending(&st, &CFG, nodes, 3, 1021));
    cr_assert_eq(st.confirm_since_ms, 0, "the round is over");
}

/* With many nodes the round ends once enough passed that the guard could not engage whatever
 * the others answer; failures never count towards that quorum. */
Test(panic, confirmation_ends_at_a_quorum_of_passes)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(8); /* share 0.5: engages with 5 of 8 failing */
    fail(0, 1000);
    nodes[0].last_probe_ms = 1000;
    panic_confirm_start(&st, 1000, 0);
    for (int i = 1; i <= 3; i++)
        nodes[i].last_probe_ms = 1000 + i;
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 8, 1004),
              "3 passed: the other 5 could still all fail, 5 of 8 engages");
    nodes[4].last_probe_ms = 1005;
    cr_assert_not(panic_confirm_pending(&st, &CFG, nodes, 8, 1006),
                  "4 passed: at most 4 of 8 can fail, which does not engage");
    cr_assert_eq(st.confirm_since_ms, 0, "the round is over");

    /* answers that fail do not make a quorum: the round waits for every node */
    panic_init(&st);
    setup_nodes(8);
    fail(0, 2000);
    nodes[0].last_probe_ms = 2000;
    panic_confirm_start(&st, 2000, 0);
    for (int i = 1; i <= 6; i++) {
        fail(i, 2000 + i);
        nodes[i].last_probe_ms = 2000 + i;
    }
    nodes[7].last_probe_ms = 1;
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 8, 2010));
    nodes[7].last_probe_ms = 2011;
    cr_assert_not(panic_confirm_pending(&st, &CFG, nodes, 8, 2012), "every node answered");
    cr_assert(panic_update(&st, &CFG, nodes, 8, 2012) == PANIC_ENGAGED);
}

/* A result that came in after the leaving node's first failure already answers the round:
 * only nodes with nothing since then wait for their confirmation probe; the timeout still
 * counts from the round's start. */
Test(panic, confirmation_counts_results_since_the_first_failure)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(4);
    fail(0, 500);
    nodes[0].last_probe_ms = 1000; /* failed first at 500, offline at 1000 */
    nodes[1].last_probe_ms = 700;  /* passed after the onset */
    nodes[2].last_probe_ms = 400;  /* before the onset: must be probed again */
    nodes[3].last_probe_ms = 300;  /* likewise */
    panic_confirm_start(&st, 1000, 500);
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 4, 1001),
              "1 passed since the onset: 3 of 4 could be failing, which engages");
    nodes[2].last_probe_ms = 1010;
    cr_assert_not(panic_confirm_pending(&st, &CFG, nodes, 4, 1011),
                  "2 passed since the onset: at most 2 of 4 fail, node 3 cannot change that");

    /* a result before the onset does not count; the timeout runs from the start (1000) */
    panic_init(&st);
    setup_nodes(2);
    nodes[1].last_probe_ms = 450;
    panic_confirm_start(&st, 1000, 500);
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 2, 1749));
    cr_assert_not(panic_confirm_pending(&st, &CFG, nodes, 2, 1750), "timeout 500 + 250 from 1000");

    /* no onset (a drained node): only results from the round's start count */
    panic_init(&st);
    setup_nodes(3);
    nodes[0].last_probe_ms = 1000; /* the drained node */
    nodes[1].last_probe_ms = 999;
    nodes[2].last_probe_ms = 999;
    panic_confirm_start(&st, 1000, 0);
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 3, 1001), "999 is before the round");
    nodes[1].last_probe_ms = 1000;
    cr_assert_not(panic_confirm_pending(&st, &CFG, nodes, 3, 1001));
}

Test(panic, confirmation_gives_up_after_one_probe_timeout)
{
    panic_state st;
    panic_init(&st);
    setup_nodes(2);
    nodes[1].last_probe_ms = 0; /* hangs */
    panic_confirm_start(&st, 1000, 0);
    cr_assert(panic_confirm_pending(&st, &CFG, nodes, 2, 1749));
    cr_assert_not(panic_confirm_pending(&st, &CFG, nodes, 2, 1750), "timeout 500 + 250");
}
