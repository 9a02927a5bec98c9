/* test_lease.c — the self-demotion rule (lease.c), driven by a fake monotonic clock: renewals
 * that succeed, come late, fail, a clock that jumps (suspend/resume), a database that hangs
 * for seconds; then a simulation of two controllers against a model of the database lease
 * (expiry by the database's clocks, which may differ by less than the margin) checking that
 * they never both consider themselves leader. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "lease.h"

#define TTL 1000
static const lease_timing T = {.ttl_ms = TTL, .margin_ms = TTL / 5};

static lease_state leader_since(int64_t sent, int64_t gen)
{
    lease_state st = {0};
    cr_assert_eq(lease_decide(&st, &T, LEASE_GRANTED, gen, sent, sent + 5), LEASE_BECAME_LEADER);
    return st;
}

Test(lease, default_margin_is_a_fifth_of_the_ttl)
{
    cr_expect_eq(lease_margin_ms(10000), 2000);
    cr_expect_eq(lease_margin_ms(1000), 200);
    cr_expect_eq(lease_margin_ms(0), 0);
}

Test(lease, renewals_that_succeed_keep_the_lead_and_move_the_deadline)
{
    lease_state st = leader_since(0, 7);
    cr_expect(st.leader);
    cr_expect_eq(st.generation, 7);
    cr_expect_eq(st.valid_until_ms, 800, "deadline counts from when the call was sent");
    for (int64_t t = 333; t < 100000; t += 333) {
        cr_assert_eq(lease_decide(&st, &T, LEASE_GRANTED, 7, t, t + 10), LEASE_KEEP);
        cr_assert_eq(st.valid_until_ms, t + 800);
        cr_assert_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 0, t + 300), LEASE_KEEP,
                     "between renewals nothing changes");
    }
    cr_expect(st.leader);
}

Test(lease, failed_renewals_demote_exactly_at_ttl_minus_margin_after_the_last_good_send)
{
    lease_state st = leader_since(1000, 3);
    cr_expect_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 1333, 1340), LEASE_KEEP);
    cr_expect_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 1666, 1700), LEASE_KEEP);
    cr_expect_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 0, 1799), LEASE_KEEP);
    cr_expect(st.leader);
    cr_expect_eq(lease_ms_left(&st, 1799), 1);
    cr_expect_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 0, 1800), LEASE_STEP_DOWN_EXPIRED);
    cr_expect_not(st.leader);
    cr_expect_eq(st.generation, 3, "the generation is remembered");
    cr_expect_leq(lease_ms_left(&st, 1800), 0);
    cr_expect_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 0, 5000), LEASE_KEEP,
                 "a follower has nothing to step down from");
}

Test(lease, a_late_renewal_counts_from_when_it_was_sent)
{
    lease_state st = leader_since(0, 4);
    /* sent at 333, answered at 900: good until 1133, not 1700 */
    cr_expect_eq(lease_decide(&st, &T, LEASE_GRANTED, 4, 333, 900), LEASE_KEEP);
    cr_expect_eq(st.valid_until_ms, 1133);
    cr_expect_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 0, 1133), LEASE_STEP_DOWN_EXPIRED);
}

Test(lease, a_database_hung_for_seconds_buys_nothing)
{
    lease_state st = leader_since(0, 9);
    /* the call sent at 333 hangs 3 s, then the database grants it: too late to be used */
    cr_expect_eq(lease_decide(&st, &T, LEASE_GRANTED, 9, 333, 3333), LEASE_STEP_DOWN_EXPIRED);
    cr_expect_not(st.leader);
    /* the same hang answered by an error */
    lease_state st2 = leader_since(0, 9);
    cr_expect_eq(lease_decide(&st2, &T, LEASE_NO_ANSWER, 0, 333, 3333), LEASE_STEP_DOWN_EXPIRED);
    /* a fresh, fast renewal of the same generation makes it leader again */
    cr_expect_eq(lease_decide(&st, &T, LEASE_GRANTED, 9, 3333, 3340), LEASE_BECAME_LEADER);
    cr_expect_eq(st.valid_until_ms, 4133);
    /* a follower's late grant makes it nothing */
    lease_state f = {0};
    cr_expect_eq(lease_decide(&f, &T, LEASE_GRANTED, 2, 0, 800), LEASE_KEEP);
    cr_expect_not(f.leader);
}

Test(lease, a_clock_that_jumps_forward_demotes_at_once)
{
    /* CLOCK_BOOTTIME runs on through a suspend: on resume the lease has long expired */
    lease_state st = leader_since(100, 5);
    cr_expect_eq(lease_decide(&st, &T, LEASE_NO_ANSWER, 0, 0, 100 + 3600 * 1000),
                 LEASE_STEP_DOWN_EXPIRED);
    /* and an answer to a call sent before the jump is useless */
    lease_state st2 = leader_since(100, 5);
    cr_expect_eq(lease_decide(&st2, &T, LEASE_GRANTED, 5, 400, 400 + 3600 * 1000),
                 LEASE_STEP_DOWN_EXPIRED);
}

Test(lease, refused_or_lost_steps_down_at_once_and_tracks_the_holder)
{
    lease_state st = leader_since(0, 5);
    cr_expect_eq(lease_decide(&st, &T, LEASE_REFUSED, 6, 333, 340), LEASE_STEP_DOWN_LOST);
    cr_expect_not(st.leader);
    cr_expect_eq(st.generation, 6, "a follower knows the leader's generation");
    cr_expect_eq(lease_decide(&st, &T, LEASE_REFUSED, 6, 666, 670), LEASE_KEEP);

    lease_state st2 = leader_since(0, 5);
    cr_expect_eq(lease_decide(&st2, &T, LEASE_LOST, 0, 333, 340), LEASE_STEP_DOWN_LOST);
    cr_expect_not(st2.leader);
    cr_expect_eq(st2.generation, 5);
}

Test(lease, a_new_generation_while_leading_is_a_new_term)
{
    lease_state st = leader_since(0, 5);
    cr_expect_eq(lease_decide(&st, &T, LEASE_GRANTED, 6, 333, 340), LEASE_BECAME_LEADER);
    cr_expect_eq(st.generation, 6);
}

/* ---- two controllers against a model of the database lease -------------------------------
 *
 * The model is store_mariadb.c's rules: a renewal succeeds while the generation is the
 * caller's; anyone takes the lease once expired by the clock of the database node it talks
 * to (each node's clock is off by a fixed skew); expiry is computed when the call *reaches*
 * the database.  Calls take random time there and back, sometimes hang for seconds, sometimes
 * fail (the statement may have run); controllers sometimes stall (a long apply) or die for a
 * while.  Events are processed in time order.  A controller considers itself leader from a
 * grant until it steps down or its deadline passes (it wakes up at the deadline).  No two
 * such periods of the two controllers may overlap while the skew stays below the margin. */

typedef struct {
    uint64_t s;
} rng;

static uint64_t rnd(rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static int64_t between(rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd(r) % (uint64_t)(hi - lo + 1));
}

typedef struct {
    int64_t generation;
    bool taken;
    int64_t expires_node; /* expiry by the granting node's clock */
} db_model;

#define MAX_SPANS 4096
#define NEVER INT64_MAX

typedef struct {
    int64_t skew;          /* its database node's clock - true time */
    lease_state st;
    int64_t held_gen;      /* what its store believes it holds (store_mariadb's lease_gen) */
    int64_t next_call;     /* NEVER while a call is in flight */
    int64_t sent, arrive, reply; /* the call in flight (arrive = NEVER once arrived) */
    bool fails, granted;
    int64_t belief_start;  /* -1 = not leading */
    int64_t spans[MAX_SPANS][2];
    int n_spans;
} sim_ctl;

static void close_span(sim_ctl *c, int64_t end)
{
    if (c->belief_start >= 0 && end > c->belief_start && c->n_spans < MAX_SPANS) {
        c->spans[c->n_spans][0] = c->belief_start;
        c->spans[c->n_spans][1] = end;
        c->n_spans++;
    }
    c->belief_start = -1;
}

static void sim_arrive(db_model *db, sim_ctl *c, int64_t now)
{
    /* statement runs on c's node: true time now, node clock now + skew */
    c->granted = false;
    if (c->held_gen > 0 && db->taken && db->generation == c->held_gen) {
        c->granted = true; /* renew */
    } else if (!db->taken || now + c->skew >= db->expires_node) {
        db->generation++; /* take */
        db->taken = true;
        c->held_gen = db->generation;
        c->granted = true;
    } else {
        c->held_gen = 0;
    }
    if (c->granted)
        db->expires_node = now + c->skew + TTL;
    c->arrive = NEVER;
}

static void sim_reply(db_model *db, sim_ctl *c, int64_t now)
{
    lease_answer a = c->fails ? LEASE_NO_ANSWER : c->granted ? LEASE_GRANTED : LEASE_REFUSED;
    int64_t until_before = c->st.leader ? c->st.valid_until_ms : now;
    switch (lease_decide(&c->st, &T, a, db->generation, c->sent, now)) {
    case LEASE_BECAME_LEADER:
        close_span(c, until_before < now ? until_before : now);
        c->belief_start = now;
        break;
    case LEASE_STEP_DOWN_LOST:
    case LEASE_STEP_DOWN_EXPIRED:
        close_span(c, until_before < now ? until_before : now);
        break;
    case LEASE_KEEP:
        break;
    }
    c->reply = NEVER;
    c->next_call = now + TTL / 3;
}

static void sim_call(rng *r, sim_ctl *c, int64_t now)
{
    int kind = (int)between(r, 0, 99);
    int64_t there, back;
    c->fails = false;
    if (kind < 80) { /* normal */
        there = between(r, 0, 15);
        back = between(r, 0, 15);
    } else if (kind < 90) { /* slow */
        there = between(r, 0, 600);
        back = between(r, 0, 600);
    } else if (kind < 94) { /* hung, then answered */
        there = between(r, 0, 4000);
        back = between(r, 0, 4000);
    } else if (kind < 98) { /* fails; the statement ran anyway */
        there = between(r, 0, 1500);
        back = between(r, 0, 1500);
        c->fails = true;
    } else { /* this controller stalls or dies for a while */
        c->next_call = now + between(r, 500, 8000);
        return;
    }
    c->sent = now;
    c->arrive = now + there;
    c->reply = now + there + back;
    c->next_call = NEVER;
}

/* Returns the number of generations taken; *overlap_ms gets the longest overlap found. */
static int run_sim(uint64_t seed, int64_t skew_b, int64_t *overlap_ms)
{
    static sim_ctl c[2];
    rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
    db_model db = {0};
    for (int i = 0; i < 2; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].skew = i ? skew_b : 0;
        c[i].belief_start = -1;
        c[i].arrive = c[i].reply = NEVER;
        c[i].next_call = between(&r, 0, TTL / 3);
    }
    const int64_t end = 120 * 1000;
    for (;;) {
        /* the earliest event: a call, an arrival, a reply or a leader's deadline */
        int who = -1, what = -1;
        int64_t when = NEVER;
        for (int i = 0; i < 2; i++) {
            int64_t ev[4] = {c[i].next_call, c[i].arrive, c[i].reply,
                             c[i].st.leader ? c[i].st.valid_until_ms : NEVER};
            for (int k = 0; k < 4; k++)
                if (ev[k] < when) {
                    when = ev[k];
                    who = i;
                    what = k;
                }
        }
        if (when >= end)
            break;
        sim_ctl *x = &c[who];
        if (what == 0) {
            sim_call(&r, x, when);
        } else if (what == 1) {
            sim_arrive(&db, x, when);
        } else if (what == 2) {
            sim_reply(&db, x, when);
        } else {
            int64_t until = x->st.valid_until_ms;
            cr_assert_eq(lease_decide(&x->st, &T, LEASE_NO_ANSWER, 0, 0, when),
                         LEASE_STEP_DOWN_EXPIRED);
            close_span(x, until);
        }
    }
    for (int i = 0; i < 2; i++)
        close_span(&c[i], end);
    *overlap_ms = 0;
    for (int a = 0; a < c[0].n_spans; a++)
        for (int b = 0; b < c[1].n_spans; b++) {
            int64_t lo = c[0].spans[a][0] > c[1].spans[b][0] ? c[0].spans[a][0]
                                                             : c[1].spans[b][0];
            int64_t hi = c[0].spans[a][1] < c[1].spans[b][1] ? c[0].spans[a][1]
                                                             : c[1].spans[b][1];
            if (hi - lo > *overlap_ms)
                *overlap_ms = hi - lo;
        }
    return (int)db.generation;
}

Test(lease, two_controllers_never_lead_at_once)
{
    int generations = 0;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        int64_t skew = (int64_t)(seed % 7) * 30 - 90; /* -90 .. +90 ms; the margin is 200 */
        int64_t overlap;
        generations += run_sim(seed, skew, &overlap);
        cr_assert_eq(overlap, 0, "seed %llu (skew %lld ms): both led for %lld ms",
                     (unsigned long long)seed, (long long)skew, (long long)overlap);
    }
    /* the runs must actually change hands often, or they prove nothing */
    cr_expect_gt(generations, 300 * 5, "only %d generations in 300 runs", generations);
}

Test(lease, database_clocks_further_apart_than_the_margin_do_overlap)
{
    /* The check above can fail: with node clocks 400 ms apart (twice the margin) some run
     * lets both lead at once. */
    int64_t worst = 0;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        int64_t overlap;
        run_sim(seed, seed % 2 ? 400 : -400, &overlap);
        if (overlap > worst)
            worst = overlap;
    }
    cr_expect_gt(worst, 0, "a margin smaller than the clock skew went unnoticed");
}
