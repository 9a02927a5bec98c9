/* test_reconcile_sched.c — when kumaguard may ask a Kuma node to reconcile (reconcile_sched.c),
 * driven by a fake clock.  Every rule that keeps a monitor from running twice has a test here:
 * one call in flight, deadlines from the work, a timed-out call that may still run, the :00
 * cron window on both sides, work left to the cron, returning nodes told first, 429/401 left
 * to the cron, the per-node budget, and pacing. */
#include <criterion/criterion.h>

#include "reconcile_sched.h"

static rsched_cfg cfg(void)
{
    rsched_cfg c;
    rsched_cfg_default(&c);
    c.base_ms = 1000;
    c.start_ms = 300;
    c.stop_ms = 150;
    c.cron_skew_ms = 2000;
    c.budget = 5;
    c.max_retries = 2;
    c.retry_ms = 1000;
    return c;
}

/* Monotonic time 0 is wall time OFF: the minute starts at mono 0, the next cron is at 60000. */
#define OFF (1700000000LL * 1000 - (1700000000LL * 1000) % 60000)
#define ALIVE 1 /* alive since mono 1 */

Test(rsched, nothing_to_do_means_no_call)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 10000, OFF);
    cr_assert_not(d.call);
}

Test(rsched, work_is_called_with_a_deadline_from_the_work)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 10, 4, 9000);
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 10000, OFF);
    cr_assert(d.call);
    cr_assert_eq(d.deadline_ms, 1000 + 10 * 300 + 4 * 150);
    cr_assert(n.in_flight);
}

Test(rsched, never_two_calls_in_flight_to_one_node)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 1, 0, 9000);
    cr_assert(rsched_next(&n, &c, true, ALIVE, 10000, OFF).call);
    rsched_add_work(&n, 1, 0, 10100); /* more work while the call runs */
    for (int64_t t = 10100; t < 20000; t += 100)
        cr_assert_not(rsched_next(&n, &c, true, ALIVE, t, OFF).call);
    rsched_finish(&n, &c, RS_OK, 200, 11500, OFF);
    cr_assert_eq(n.starts, 1, "what arrived during the call is still pending");
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 11600, OFF);
    cr_assert(d.call, "the new work gets its own call after the answer");
    cr_assert_eq(d.deadline_ms, 1300);
}

Test(rsched, success_clears_the_work_it_covered)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 3, 2, 9000);
    rsched_next(&n, &c, true, ALIVE, 10000, OFF);
    rsched_finish(&n, &c, RS_OK, 200, 12000, OFF);
    cr_assert_eq(n.starts, 0);
    cr_assert_eq(n.stops, 0);
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 12100, OFF).call);
    cr_assert_eq(n.last_duration_ms, 2000);
}

/* Rule 4: the call must end before the node's :00 cron (minus skew); otherwise the work is
 * left to that cron. */
Test(rsched, no_call_that_could_run_into_the_cron)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 10, 0, 40000); /* worst 4000 ms */
    /* 60000 - 2000 (skew) = 58000: a call must start before 54000 */
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 54000, OFF);
    cr_assert_not(d.call, "54000 + 4000 reaches 58000");
    cr_assert_str_eq(n.waiting, "too close to the node's :00 cron: left to it");
    cr_assert(d.wake_ms > 60000);
    rsched_node m;
    rsched_init(&m);
    rsched_add_work(&m, 10, 0, 40000);
    cr_assert(rsched_next(&m, &c, true, ALIVE, 53999, OFF).call);
}

Test(rsched, no_call_while_the_cron_may_still_run)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    /* work committed just after :00 (the cron may or may not have seen it) */
    rsched_add_work(&n, 2, 0, 60500);
    /* the cron at 60000 may run until 60000 + skew + worst(2 starts) = 63600 */
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 61000, OFF).call);
    cr_assert_str_eq(n.waiting, "the node's cron may be running");
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 63599, OFF).call);
    cr_assert(rsched_next(&n, &c, true, ALIVE, 63600, OFF).call);
}

/* Rule 5: work committed before a cron that ran while the node answered is done by it. */
Test(rsched, work_before_a_cron_the_node_lived_through_is_forgotten)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 5, 0, 56000); /* too late for a call (worst 2500) */
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 56100, OFF).call);
    /* after the cron's worst case: 60000 + 2000 + 2500 */
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 64500, OFF).call);
    cr_assert_eq(n.starts, 0, "the cron did it");
    cr_assert_eq(n.left_to_cron, 1);
}

Test(rsched, work_committed_inside_the_skew_is_not_assumed_done_by_that_cron)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 1, 0, 58500); /* within skew of :00: the cron may miss it */
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 70000, OFF);
    cr_assert(d.call, "it is called for, not assumed done");
    cr_assert_eq(n.left_to_cron, 0);
}

Test(rsched, a_node_that_was_down_at_the_cron_still_needs_a_call)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 1, 0, 50000);
    int64_t alive_since = 61000; /* failing at the cron, answering again after it */
    rsched_decision d = rsched_next(&n, &c, true, alive_since, 65000, OFF);
    cr_assert(d.call, "the cron cannot have run while the node was down");
}

/* Work committed at 5000, called at 6000, no answer by the deadline. */
static void call_times_out(rsched_node *n, const rsched_cfg *c, int starts, int stops)
{
    rsched_init(n);
    rsched_add_work(n, starts, stops, 5000);
    rsched_decision d = rsched_next(n, c, true, ALIVE, 6000, OFF);
    cr_assert(d.call);
    cr_assert_eq(d.deadline_ms, 1000 + starts * 300 + stops * 150);
    rsched_finish(n, c, RS_TIMEOUT, 0, 6000 + d.deadline_ms, OFF);
    cr_assert(n->stale);
}

/* Rule 3: the deadline passed, the node (hung) may run the call whenever it wakes up. */
Test(rsched, a_timed_out_call_is_not_repeated_while_it_may_still_run)
{
    rsched_cfg c = cfg();
    rsched_node n;
    call_times_out(&n, &c, 10, 0);
    /* still failing probes: no call however long we wait */
    for (int64_t t = 11000; t < 50000; t += 1000)
        cr_assert_not(rsched_next(&n, &c, true, 0, t, OFF).call);
    /* answering again from 20000: its stale call may run until 20000 + 4000 */
    cr_assert_not(rsched_next(&n, &c, true, 20000, 21000, OFF).call);
    cr_assert_not(rsched_next(&n, &c, true, 20000, 23999, OFF).call);
    cr_assert(rsched_next(&n, &c, true, 20000, 24000, OFF).call);
}

/* Rule 3, found by the exactly-once scenario: a node hung after taking a call for 5 stops reads
 * its monitor set when it wakes, by then 14 more of its monitors had moved away (because it
 * hung): the stale call does 19 stops, and the next call must wait for that. */
Test(rsched, a_stale_call_may_do_the_work_added_while_the_node_hung)
{
    rsched_cfg c = cfg();
    rsched_node n;
    call_times_out(&n, &c, 0, 5);
    rsched_add_work(&n, 0, 14, 8000); /* its monitors failed over while it hung */
    for (int64_t t = 9000; t < 20000; t += 1000)
        cr_assert_not(rsched_next(&n, &c, true, 0, t, OFF).call);
    /* answering again from 20000: the stale call may run 19 stops from then */
    cr_assert_not(rsched_next(&n, &c, true, 20000, 20000 + 1750, OFF).call,
                  "the stale call's own worst case is not enough");
    cr_assert_not(rsched_next(&n, &c, true, 20000, 20000 + 1000 + 19 * 150 - 1, OFF).call);
    cr_assert(rsched_next(&n, &c, true, 20000, 20000 + 1000 + 19 * 150, OFF).call);
}

Test(rsched, a_connection_that_never_opened_is_retried_with_back_off_then_left_to_cron)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 1, 0, 5000);
    cr_assert(rsched_next(&n, &c, true, ALIVE, 6000, OFF).call);
    rsched_finish(&n, &c, RS_CONNECT_FAILED, 0, 6010, OFF);
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 6500, OFF).call, "back-off 1000");
    cr_assert(rsched_next(&n, &c, true, ALIVE, 7010, OFF).call);
    rsched_finish(&n, &c, RS_HTTP_ERROR, 500, 7020, OFF);
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 8000, OFF).call, "back-off 2000");
    cr_assert(rsched_next(&n, &c, true, ALIVE, 9020, OFF).call);
    rsched_finish(&n, &c, RS_HTTP_ERROR, 500, 9030, OFF);
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 30000, OFF).call, "retries spent: cron");
    cr_assert_str_eq(n.waiting, "left to the node's cron after a refused call");
}

Test(rsched, rate_limited_and_unauthorized_leave_the_work_to_the_cron)
{
    rsched_result rs[2] = {RS_RATE_LIMITED, RS_UNAUTHORIZED};
    for (int k = 0; k < 2; k++) {
        rsched_cfg c = cfg();
        rsched_node n;
        rsched_init(&n);
        rsched_add_work(&n, 1, 0, 5000);
        cr_assert(rsched_next(&n, &c, true, ALIVE, 6000, OFF).call);
        rsched_finish(&n, &c, rs[k], k ? 401 : 429, 6100, OFF);
        for (int64_t t = 6200; t < 60000; t += 500)
            cr_assert_not(rsched_next(&n, &c, true, ALIVE, t, OFF).call, "no retry: %s",
                          rsched_result_name(rs[k]));
        /* the cron at 60000 does it */
        rsched_next(&n, &c, true, ALIVE, 63400, OFF);
        cr_assert_eq(n.starts, 0);
        cr_assert_eq(k ? n.unauthorized : n.rate_limited, 1);
    }
}

Test(rsched, the_budget_caps_calls_per_window)
{
    rsched_cfg c = cfg(); /* budget 5 per 15 minutes */
    rsched_node n;
    rsched_init(&n);
    int64_t t = 5000;
    int calls = 0;
    for (int i = 0; i < 8; i++) {
        rsched_add_work(&n, 1, 0, t);
        rsched_decision d = rsched_next(&n, &c, true, ALIVE, t + 1, OFF);
        if (d.call) {
            calls++;
            rsched_finish(&n, &c, RS_OK, 200, t + 100, OFF);
        }
        t += 2000;
    }
    cr_assert_eq(calls, 5);
    cr_assert_str_eq(n.waiting, "call budget for this node spent: left to its cron");
}

/* Rule 6: a node back from failing is told first; our call or its cron both count. */
Test(rsched, a_returning_node_must_be_told_and_a_call_tells_it)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 0, 20, 5000); /* its monitors moved away while it was down */
    rsched_mark_returning(&n);
    cr_assert(rsched_must_tell(&n));
    /* answering again since 10000: a cron it may have been stopped in could run 1000 more */
    cr_assert_not(rsched_next(&n, &c, true, 10000, 10500, OFF).call);
    rsched_decision d = rsched_next(&n, &c, true, 10000, 11000, OFF);
    cr_assert(d.call);
    cr_assert_eq(d.deadline_ms, 1000 + 20 * 150);
    rsched_finish(&n, &c, RS_OK, 200, 12000, OFF);
    cr_assert_not(rsched_must_tell(&n));
}

Test(rsched, a_returning_node_is_told_by_a_cron_it_lived_through)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_mark_returning(&n);
    /* cannot be called (no key): the cron at 60000 tells it, once it answered before it */
    cr_assert_not(rsched_next(&n, &c, false, 30000, 40000, OFF).call);
    cr_assert(rsched_must_tell(&n));
    rsched_next(&n, &c, false, 30000, 63001, OFF);
    cr_assert_not(rsched_must_tell(&n));
}

Test(rsched, room_is_what_fits_before_the_next_cron)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    /* at 10000: 58000 - 10000 - base 1000 = 47000 ms of room */
    cr_assert_eq(rsched_room_ms(&n, &c, true, ALIVE, 10000, OFF), 47000);
    rsched_add_work(&n, 100, 0, 10000); /* 30 s of starts */
    cr_assert_eq(rsched_room_ms(&n, &c, true, ALIVE, 10000, OFF), 17000);
    cr_assert_eq(rsched_room_ms(&n, &c, true, ALIVE, 50000, OFF), 0, "nothing more fits");
    rsched_next(&n, &c, true, ALIVE, 10000, OFF);
    cr_assert_eq(rsched_room_ms(&n, &c, true, ALIVE, 10001, OFF), 0, "none while a call runs");
    /* cron-paced (not callable): one minute minus two skews */
    rsched_node m;
    rsched_init(&m);
    cr_assert_eq(rsched_room_ms(&m, &c, false, ALIVE, 10000, OFF), 60000 - 4000 - 1000);
}

Test(rsched, next_cron_follows_the_wall_clock)
{
    rsched_cfg c = cfg();
    cr_assert_eq(rsched_next_cron_ms(&c, 0, OFF), 60000);
    cr_assert_eq(rsched_next_cron_ms(&c, 59999, OFF), 60000);
    cr_assert_eq(rsched_next_cron_ms(&c, 60000, OFF), 120000);
    cr_assert_eq(rsched_next_cron_ms(&c, 0, OFF + 30000), 30000, "wall half a minute ahead");
}

/* The exactly-once scenario found this: a node hung in the middle of its :00 cron run resumes
 * it when it wakes; a call sent as soon as it answered again overlapped that run. */
Test(rsched, a_cron_a_hung_node_was_stopped_in_resumes_with_the_node)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 10, 0, 55000); /* its :00 cron does these (worst 4000 ms) */
    rsched_mark_returning(&n);
    /* frozen from :01 to :20; answering again at 80000 (:20) */
    rsched_decision d = rsched_next(&n, &c, true, 80000, 80001, OFF);
    cr_assert_not(d.call, "the cron it was stopped in may run until 80000 + 4000");
    cr_assert_str_eq(n.waiting, "the node's cron may be running");
    cr_assert_not(rsched_next(&n, &c, true, 80000, 83999, OFF).call);
    cr_assert(rsched_next(&n, &c, true, 80000, 84000, OFF).call);
    cr_assert_eq(rsched_room_ms(&n, &c, true, 80000, 83000, OFF), 0);
}

Test(rsched, a_node_up_since_before_the_cron_is_not_held_back)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 1, 0, 70000); /* after the cron at 60000 */
    cr_assert(rsched_next(&n, &c, true, ALIVE, 70001, OFF).call);
}

/* Also found by the scenario: monitors Kuma added by SQL made the nodes' :00 cron run for
 * seconds, and kumaguard, which did not know, called a node in the middle of that run. */
Test(rsched, foreign_changes_lengthen_the_cron_but_ask_for_no_call)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    /* 12 monitors added somewhere between two reads at 50000 and 57000 */
    rsched_add_work_between(&n, 12, 0, 50000, 57000);
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 57001, OFF).call, "no call for them");
    /* the cron at 60000 may start them: it runs until 60000 + 2000 + 1000 + 12 * 300 */
    rsched_add_work(&n, 1, 0, 62000); /* our own move, after that cron started */
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 66000, OFF).call,
                  "the cron that starts them may still run");
    cr_assert(rsched_next(&n, &c, true, ALIVE, 66600, OFF).call);
    /* the cron did the foreign work: forgotten once its worst case is over */
    cr_assert_eq(n.starts, 1);
}

/* Regression (clock steps): the wall clock is only used for the node's cron.  A step of it
 * moves where the cron is expected, never the deadline of a call in flight (monotonic). */
Test(rsched, a_wall_clock_step_moves_the_cron_not_the_deadline)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 10, 0, 5000);
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 6000, OFF);
    cr_assert(d.call);
    int64_t deadline = n.call_deadline_ms;
    /* the wall clock steps 40 s forward: the cron is now 14 s away, the call still runs */
    rsched_decision w = rsched_next(&n, &c, true, ALIVE, 6500, OFF + 40000);
    cr_assert_not(w.call);
    cr_assert_eq(w.wake_ms, deadline, "the deadline did not move");
    cr_assert_eq(rsched_next_cron_ms(&c, 6500, OFF + 40000), 20000);
    rsched_finish(&n, &c, RS_OK, 200, 7000, OFF + 40000);
    cr_assert_eq(n.starts, 0);
}

/* A node slower than our worst case (it kept answering probes) is not hung: after the deadline
 * it gets four times the deadline in all (not called again before), and its later deadlines
 * count it four times slower — until quick answers show otherwise. */
Test(rsched, a_slow_node_that_answers_probes_is_counted_slower)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 10, 0, 5000);
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 6000, OFF);
    cr_assert(d.call);
    int64_t dl = d.deadline_ms; /* 4000 */
    rsched_finish(&n, &c, RS_TIMEOUT, 0, 6000 + dl, OFF);
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 6000 + dl + 100, OFF).call);
    cr_assert_not(rsched_next(&n, &c, true, ALIVE, 6000 + 4 * dl - 1, OFF).call);
    rsched_decision again = rsched_next(&n, &c, true, ALIVE, 6000 + 4 * dl, OFF);
    cr_assert(again.call, "called again once four times its deadline passed");
    cr_assert_eq(again.deadline_ms, 4 * dl, "and given four times the time (%lld)",
                 (long long)again.deadline_ms);
    rsched_finish(&n, &c, RS_OK, 200, 6000 + 4 * dl + 500, OFF); /* quick: trusted more */
    cr_assert_eq(n.slow_factor, 2);
}

/* Pacing a node counted slower: room is in the configured costs, which is what the caller
 * charges per move, so the moves it is given still fit in a call before its cron (and its
 * cron, if the call is refused, still ends within the minute).  It was the node's room at
 * its own speed, charged at the configured cost: four times too many moves, none callable. */
Test(rsched, a_node_counted_slower_is_paced_to_what_it_can_start)
{
    rsched_cfg c = cfg();
    rsched_node n;
    rsched_init(&n);
    rsched_add_work(&n, 10, 0, 5000);
    rsched_decision d = rsched_next(&n, &c, true, ALIVE, 6000, OFF);
    rsched_finish(&n, &c, RS_TIMEOUT, 0, 6000 + d.deadline_ms, OFF);
    (void)rsched_next(&n, &c, true, ALIVE, 6000 + d.deadline_ms + 1, OFF); /* counted slower */
    cr_assert_eq(n.slow_factor, 4);
    int64_t t = 130000; /* two minutes on: the crons it answered through did the old work */
    (void)rsched_next(&n, &c, true, ALIVE, t, OFF);
    cr_assert_eq(n.starts, 0);
    int64_t room = rsched_room_ms(&n, &c, true, ALIVE, t, OFF);
    int k = (int)(room / c.start_ms); /* what pace_moves gives it */
    cr_assert_gt(k, 0);
    rsched_add_work(&n, k, 0, t);
    d = rsched_next(&n, &c, true, ALIVE, t, OFF);
    cr_assert(d.call, "%d starts paced to a node four times slower: %s", k, n.waiting);
    cr_assert_lt(t + d.deadline_ms, 180000 - c.cron_skew_ms, "and ends before its next cron");
}
