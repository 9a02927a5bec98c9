/* test_kumasim_model.c — the simulated Kuma node's pure model (tests/kumasim/model.c, idmap.c):
 * cron timing on a skewed clock, the overlap leak, stops that cannot reach a leaked copy, the
 * timeline of copies (/_sim/timeline), the rate limit, and the id map.  kumasim links no kg_core, and kg_core has no kumasim code, so
 * the two files are compiled into this test directly. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "../kumasim/idmap.c"
#include "../kumasim/model.c"

#define MIN 60000LL
#define T0 (29000000LL * MIN) /* a minute boundary in the 2020s, in ms */

/* ---- cron ---- */

Test(kumasim_cron, fires_in_second_00_at_the_check_phase)
{
    cr_assert_eq(cron_next_fire(T0 + 10, 0, 250), T0 + 250);
    cr_assert_eq(cron_next_fire(T0 + 250, 0, 250), T0 + 250);
    cr_assert_eq(cron_next_fire(T0 + 251, 0, 250), T0 + MIN + 250);
    cr_assert_eq(cron_next_fire(T0 - 1, 0, 0), T0);
    cr_assert_eq(cron_next_fire(T0 + 1, 0, 0), T0 + MIN);
    cr_assert_eq(cron_next_fire(T0 + 1, 0, 999), T0 + 999);
}

Test(kumasim_cron, follows_the_node_clock_not_the_real_one)
{
    /* node clock = real - 12.345 s: its :00 comes 12.345 s after the real one */
    int64_t f = cron_next_fire(T0 + 1, -12345, 0);
    cr_assert(cron_in_window(f, -12345));
    cr_assert_eq(cron_minute(f, -12345), cron_minute(T0 + 12345, -12345));
    cr_assert(f >= T0 + 12345 && f < T0 + 12345 + 1000, "fire %lld", (long long)(f - T0));
    /* ahead by 59.9 s */
    f = cron_next_fire(T0, 59900, 500);
    cr_assert(cron_in_window(f, 59900));
    cr_assert(f > T0 && f <= T0 + 100 + 1000, "fire %lld", (long long)(f - T0));
}

Test(kumasim_cron, the_check_lands_on_the_phase_within_the_second)
{
    for (int phase = 0; phase < 1000; phase += 37)
        for (int64_t skew = -70000; skew <= 70000; skew += 4321) {
            int64_t from = T0 + 17, f = cron_next_fire(from, skew, phase);
            cr_assert(f >= from);
            cr_assert(cron_in_window(f, skew), "skew %lld phase %d", (long long)skew, phase);
            cr_assert_eq(((f % 1000) + 1000) % 1000, phase);
            /* nothing earlier qualifies */
            int64_t prev = cron_next_fire(from, skew, phase) - MIN;
            cr_assert(prev < from);
        }
}

Test(kumasim_cron, minute_and_window_with_negative_times)
{
    cr_assert_eq(cron_minute(-1, 0), -1);
    cr_assert(!cron_in_window(-1, 0));
    cr_assert(cron_in_window(-MIN, 0));
    cr_assert(cron_in_window(-MIN + 999, 0));
    cr_assert(!cron_in_window(-MIN + 1000, 0));
}

/* ---- runs ---- */

static int64_t *ids_1_to(int n)
{
    int64_t *v = malloc((size_t)n * sizeof(*v));
    for (int i = 0; i < n; i++)
        v[i] = i + 1;
    return v;
}

static void run_to_end(struct node_proc *p, struct run *r)
{
    while (model_run_step(p, r, 1.0, 0) >= 0)
        ;
    model_run_end(p, r, RUN_OK, 0);
}

Test(kumasim_run, steps_start_then_stop_then_answer_with_real_delays)
{
    struct node_proc p = { .rng = 42 };
    int64_t *ten = ids_1_to(10);
    int64_t keep[] = { 3, 4 };
    struct run *r;
    int64_t total = 0, d;

    r = model_run_begin(&p, TRIGGER_CALL, ten, 10, 0, 1);
    cr_assert_eq(r->rec.to_start, 10);
    for (int i = 0; i < 10; i++) {
        d = model_run_step(&p, r, 1.0, 0);
        cr_assert(d >= START_SLEEP_MIN_MS && d <= START_SLEEP_MAX_MS);
        total += d;
    }
    cr_assert_eq(model_run_step(&p, r, 1.0, 0), RUN_OVERHEAD_MS);
    cr_assert_eq(model_run_step(&p, r, 1.0, 0), -1);
    model_run_end(&p, r, RUN_OK, 0);
    cr_assert(total >= 1000 && total <= 3000);
    cr_assert_eq(p.listed.len, 10);
    model_run_free(r);

    r = model_run_begin(&p, TRIGGER_CALL, keep, 2, 0, 2);
    cr_assert_eq(r->rec.to_start, 0);
    cr_assert_eq(r->rec.to_stop, 8);
    for (int i = 0; i < 8; i++) {
        d = model_run_step(&p, r, 0.5, 0);
        cr_assert(d >= STOP_SLEEP_MIN_MS / 2 && d <= STOP_SLEEP_MAX_MS / 2 + 1);
    }
    run_to_end(&p, r);
    cr_assert_eq(p.listed.len, 2);
    cr_assert_eq(model_copies(&p, 3), 1);
    cr_assert_eq(model_copies(&p, 1), 0);
    model_run_free(r);
    model_free(&p);
    free(ten);
}

Test(kumasim_run, two_overlapping_runs_start_a_monitor_twice_and_leak_the_first_copy)
{
    struct node_proc p = { .rng = 7 };
    int64_t *ten = ids_1_to(10);
    struct run *a, *b;

    a = model_run_begin(&p, TRIGGER_CALL, ten, 10, 0, 1);
    for (int i = 0; i < 4; i++)
        model_run_step(&p, a, 1.0, 0);        /* 4 started when the second call arrives */
    b = model_run_begin(&p, TRIGGER_CALL, ten, 10, 800, 2);
    cr_assert(a->rec.overlapped && b->rec.overlapped);
    cr_assert_eq(p.overlapping_runs, 1);
    cr_assert_eq(b->rec.to_start, 6);       /* "running" was computed once, at its start */
    while (model_run_step(&p, a, 1.0, 0) >= 0 || model_run_step(&p, b, 1.0, 0) >= 0)
        ;
    model_run_end(&p, a, RUN_OK, 0);
    model_run_end(&p, b, RUN_OK, 0);
    cr_assert_eq(p.leaked_total, 6);
    cr_assert_eq(a->rec.leaked + b->rec.leaked, 6);
    for (int id = 5; id <= 10; id++)
        cr_assert_eq(model_copies(&p, id), 2, "monitor %d", id);
    model_run_free(a);
    model_run_free(b);

    /* moved away: the stop reaches the listed copy only, six keep checking */
    struct run *c = model_run_begin(&p, TRIGGER_CALL, NULL, 0, 0, 3);
    cr_assert_eq(c->rec.to_stop, 10);
    cr_assert(!c->rec.overlapped);
    run_to_end(&p, c);
    model_run_free(c);
    cr_assert_eq(p.listed.len, 0);
    cr_assert_eq(p.leaked_total, 6);
    cr_assert_eq(model_copies(&p, 7), 1);
    /* only a restart ends it */
    model_clear(&p, 0);
    cr_assert_eq(model_copies(&p, 7), 0);
    cr_assert_eq(p.leaked_total, 0);
    model_free(&p);
    free(ten);
}

Test(kumasim_run, runs_one_after_the_other_leak_nothing)
{
    struct node_proc p = { .rng = 7 };
    int64_t *ten = ids_1_to(10);
    for (int k = 0; k < 3; k++) {
        struct run *r = model_run_begin(&p, TRIGGER_CRON, ten, k == 2 ? 0 : 10, 0, (uint64_t)k);
        cr_assert(!r->rec.overlapped);
        run_to_end(&p, r);
        model_run_free(r);
    }
    cr_assert_eq(p.leaked_total, 0);
    cr_assert_eq(p.listed.len, 0);
    cr_assert_eq(p.active_runs, 0);
    cr_assert_eq(p.active_cron_runs, 0);
    model_free(&p);
    free(ten);
}

Test(kumasim_run, populate_then_a_run_with_the_same_set_has_nothing_to_do)
{
    struct node_proc p = { .rng = 1 };
    int64_t set[] = { 5, 9, 9, 12 };   /* duplicates are harmless */
    cr_assert(model_populate(&p, set, 4, 0));
    struct run *r = model_run_begin(&p, TRIGGER_CALL, set, 4, 0, 1);
    cr_assert_eq(r->rec.wanted, 3);
    cr_assert_eq(r->rec.to_start + r->rec.to_stop, 0);
    cr_assert_eq(model_run_step(&p, r, 0.0, 0), 0);   /* the closing overhead, scaled to 0 */
    cr_assert_eq(model_run_step(&p, r, 0.0, 0), -1);
    model_run_end(&p, r, RUN_OK, 0);
    model_run_free(r);
    model_free(&p);
}

/* ---- timeline ---- */

/* Steps r to its end, the k-th step at time t0 + k * 1000, so each event's time says which
 * step made it. */
static void run_timed(struct node_proc *p, struct run *r, int64_t t0)
{
    int64_t k = 0;
    while (model_run_step(p, r, 1.0, t0 + 1000 * k++) >= 0)
        ;
    model_run_end(p, r, RUN_OK, t0 + 1000 * k);
}

static const struct tl_copy *find_copy(const struct tl_copy *c, size_t n, int64_t id, int nth)
{
    for (size_t i = 0; i < n; i++)
        if (c[i].id == id && nth-- == 0)
            return &c[i];
    return NULL;
}

Test(kumasim_timeline, a_copy_starts_at_its_step_and_stops_at_the_step_that_stops_it)
{
    struct node_proc p = { .rng = 3, .tl = { .max = 100 } };
    int64_t three[] = { 1, 2, 3 }, two[] = { 2, 3 };
    struct run *r = model_run_begin(&p, TRIGGER_CALL, three, 3, T0, 1);
    size_t n;
    bool oom;

    run_timed(&p, r, T0);                   /* starts 1, 2, 3 at T0, +1 s, +2 s */
    model_run_free(r);
    r = model_run_begin(&p, TRIGGER_CRON, two, 2, T0 + 10000, 2);
    run_timed(&p, r, T0 + 10000);           /* stops 1 at +10 s */
    model_run_free(r);

    struct tl_copy *c = tl_copies(&p, 0, &n, &oom);
    cr_assert(!oom);
    cr_assert_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c[i].id, i + 1);
        cr_assert_eq(c[i].copy, (uint32_t)(i + 1));
        cr_assert_eq(c[i].start_ms, T0 + 1000 * i);
        cr_assert_eq(c[i].started_by, TL_RUN);
        cr_assert_eq(c[i].leaked_ms, 0);
    }
    cr_assert_eq(c[0].stop_ms, T0 + 10000);
    cr_assert(!c[0].running && !c[0].listed);
    cr_assert(c[1].running && c[1].listed && c[1].stop_ms == 0);
    free(c);
    /* one monitor only */
    c = tl_copies(&p, 3, &n, &oom);
    cr_assert_eq(n, 1);
    cr_assert_eq(c[0].id, 3);
    free(c);
    cr_assert_null(tl_copies(&p, 99, &n, &oom));
    cr_assert(n == 0 && !oom);
    model_free(&p);
}

Test(kumasim_timeline, a_leaked_copy_has_no_stop_until_a_restart_ends_it)
{
    struct node_proc p = { .rng = 7, .tl = { .max = 1000 } };
    int64_t *ten = ids_1_to(10);
    size_t n;
    bool oom;

    struct run *a = model_run_begin(&p, TRIGGER_CALL, ten, 10, T0, 1);
    for (int i = 0; i < 4; i++)
        model_run_step(&p, a, 1.0, T0 + i);
    struct run *b = model_run_begin(&p, TRIGGER_CRON, ten, 10, T0 + 800, 2);
    int64_t t = T0 + 1000;
    while (model_run_step(&p, a, 1.0, t++) >= 0 || model_run_step(&p, b, 1.0, t++) >= 0)
        ;
    model_run_end(&p, a, RUN_OK, t);
    model_run_end(&p, b, RUN_OK, t);
    model_run_free(a);
    model_run_free(b);
    cr_assert_eq(p.leaked_total, 6);

    struct tl_copy *c = tl_copies(&p, 0, &n, &oom);
    cr_assert_eq(n, 16);                    /* 10 + 6 second copies */
    for (int id = 5; id <= 10; id++) {
        const struct tl_copy *first = find_copy(c, n, id, 0), *second = find_copy(c, n, id, 1);
        cr_assert(first && second, "monitor %d", id);
        cr_assert(first->copy < second->copy);
        /* the first copy dropped out of the list when the second started, and runs on */
        cr_assert_eq(first->leaked_ms, second->start_ms, "monitor %d", id);
        cr_assert(first->running && !first->listed && first->stop_ms == 0);
        cr_assert(second->running && second->listed);
    }
    free(c);

    /* moved away: the stop reaches the listed copy only */
    struct run *s = model_run_begin(&p, TRIGGER_CALL, NULL, 0, T0 + 60000, 3);
    run_timed(&p, s, T0 + 60000);
    model_run_free(s);
    c = tl_copies(&p, 7, &n, &oom);
    cr_assert_eq(n, 2);
    cr_assert(c[0].running && c[0].stop_ms == 0 && c[0].leaked_ms != 0);
    cr_assert(!c[1].running && c[1].stop_ms >= T0 + 60000 && c[1].stopped_by == TL_RUN);
    free(c);

    /* a restart ends every copy, the leaked ones too, and says so */
    model_clear(&p, T0 + 120000);
    c = tl_copies(&p, 0, &n, &oom);
    cr_assert_eq(n, 16);
    for (size_t i = 0; i < n; i++) {
        cr_assert(!c[i].running);
        cr_assert_neq(c[i].stop_ms, 0, "copy %u of %lld", c[i].copy, (long long)c[i].id);
        if (c[i].leaked_ms != 0) {
            cr_assert_eq(c[i].stop_ms, T0 + 120000);
            cr_assert_eq(c[i].stopped_by, TL_RESTART);
        }
    }
    free(c);
    /* the new process starts what it is assigned: new copy numbers, cause "boot" */
    cr_assert(model_populate(&p, ten, 2, T0 + 121000));
    c = tl_copies(&p, 1, &n, &oom);
    cr_assert_eq(n, 2);
    cr_assert(c[1].copy > 16 && c[1].started_by == TL_BOOT && c[1].start_ms == T0 + 121000);
    free(c);
    model_free(&p);
    free(ten);
}

Test(kumasim_timeline, the_record_is_a_bounded_ring_and_running_copies_are_always_reported)
{
    struct node_proc p = { .rng = 1, .tl = { .max = 4 } };
    int64_t *ten = ids_1_to(10);
    size_t n;
    bool oom;

    cr_assert(model_populate(&p, ten, 10, T0));         /* 10 start events, 4 kept */
    cr_assert_eq(p.tl.len, 4);
    cr_assert_eq(p.tl.dropped, 6);
    cr_assert_eq(tl_at(&p.tl, 0)->id, 7);
    cr_assert_eq(tl_at(&p.tl, 3)->id, 10);
    struct tl_copy *c = tl_copies(&p, 0, &n, &oom);
    cr_assert_eq(n, 10);
    for (size_t i = 0; i < n; i++) {
        cr_assert(c[i].running && c[i].listed);
        /* the first six started before what the record still holds */
        cr_assert_eq(c[i].start_ms, i < 6 ? 0 : T0, "monitor %lld", (long long)c[i].id);
    }
    free(c);

    /* shrinking keeps the newest */
    cr_assert(tl_set_max(&p.tl, 2));
    cr_assert_eq(p.tl.len, 2);
    cr_assert_eq(p.tl.dropped, 8);
    cr_assert_eq(tl_at(&p.tl, 0)->id, 9);
    /* a clear forgets it all and begins the record again */
    tl_clear(&p.tl, T0 + 5);
    cr_assert_eq(p.tl.len, 0);
    cr_assert_eq(p.tl.dropped, 0);
    cr_assert_eq(p.tl.since_ms, T0 + 5);
    c = tl_copies(&p, 0, &n, &oom);
    cr_assert_eq(n, 10);                    /* still running, start unknown */
    cr_assert_eq(c[0].start_ms, 0);
    free(c);
    /* no record at all */
    cr_assert(tl_set_max(&p.tl, 0));
    model_clear(&p, T0 + 10);
    cr_assert_eq(p.tl.len, 0);
    cr_assert_null(tl_copies(&p, 0, &n, &oom));
    cr_assert(!oom);
    /* growing again records again, and the array grows only as events come */
    cr_assert(tl_set_max(&p.tl, 100000));
    cr_assert_eq(p.tl.cap, 0);
    cr_assert(model_populate(&p, ten, 3, T0 + 20));
    cr_assert_eq(p.tl.len, 3);
    cr_assert(p.tl.cap < 1000);
    model_free(&p);
    free(ten);
}

/* ---- rate limit ---- */

Test(kumasim_ratelimit, counts_every_request_per_client_in_its_own_window)
{
    struct ratelimit rl = { .limit = 3, .window_ms = 1000 };
    unsigned char a[4] = { 127, 0, 0, 1 }, b[4] = { 127, 0, 0, 2 };
    struct rl_verdict v;

    for (int i = 0; i < 3; i++)
        cr_assert(rl_hit(&rl, a, 4, 100).allowed);
    v = rl_hit(&rl, a, 4, 200);
    cr_assert(!v.allowed);
    cr_assert_eq(v.reset_in_ms, 900);
    cr_assert(!rl_hit(&rl, a, 4, 1099).allowed);   /* 429s count too, still over */
    cr_assert(rl_hit(&rl, b, 4, 1099).allowed);    /* another address */
    cr_assert(rl_hit(&rl, a, 4, 1100).allowed);    /* a's window ended */
    cr_assert_eq(rl.limited, 2);
    rl.limit = 0;
    for (int i = 0; i < 10; i++)
        cr_assert(rl_hit(&rl, a, 4, 1200).allowed);
    rl_free(&rl);
}

/* ---- id map ---- */

Test(kumasim_idmap, agrees_with_an_array_through_many_inserts_and_deletes)
{
    enum { N = 5000 };
    static uint32_t ref[N];
    struct idmap m = { 0 };
    uint64_t s = 99;

    for (int i = 0; i < 200000; i++) {
        int64_t id = 1 + (int64_t)(rng_next(&s) % (N - 1));
        uint32_t v = (uint32_t)(rng_next(&s) % 3);
        cr_assert(idmap_set(&m, id, v));
        ref[id] = v;
    }
    size_t live = 0;
    for (int id = 1; id < N; id++) {
        cr_assert_eq(idmap_get(&m, id), ref[id], "id %d", id);
        live += ref[id] != 0;
    }
    cr_assert_eq(m.len, live);
    size_t n;
    int64_t *keys = idmap_sorted_keys(&m, &n);
    cr_assert_eq(n, live);
    for (size_t i = 1; i < n; i++)
        cr_assert(keys[i - 1] < keys[i]);
    free(keys);
    idmap_free(&m);
}
