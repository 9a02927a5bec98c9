/* lease_cases.h — the leader lease seen by two controllers at once, written once and run on
 * one MariaDB server (test_store_mariadb.c: both stores on the same server) and on a Galera
 * cluster (test_store_galera.c: each store on another node, where only the database's own
 * arbitration — certification — can keep them apart).
 *
 * The harness opens store A and store B on their sides and runs raw SQL on A's side. */
#ifndef KG_TEST_LEASE_CASES_H
#define KG_TEST_LEASE_CASES_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store.h"

typedef struct {
    kg_store *(*open_a)(void); /* with the schema ensured */
    kg_store *(*open_b)(void);
    void (*exec)(const char *sql); /* on A's side */
    long long (*query_int)(const char *sql);
} lease_harness;

#define LEASE_ERRLEN 512

static int64_t lc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One lease call, as a controller would make it. */
typedef struct {
    kg_store *s;
    const char *id;
    int ttl_ms;
    pthread_barrier_t *start; /* NULL = go at once */
    int rc;
    bool leader;
    int64_t gen;
    char err[LEASE_ERRLEN];
} lease_call;

static void *lc_call(void *arg)
{
    lease_call *c = arg;
    if (c->start)
        pthread_barrier_wait(c->start);
    c->rc = c->s->ops->lease(c->s, c->id, c->ttl_ms, &c->leader, &c->gen, c->err,
                             sizeof(c->err));
    return NULL;
}

/* Both ask at the same moment (a barrier), from two threads. */
static void lc_race(lease_call *a, lease_call *b)
{
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    a->start = b->start = &bar;
    pthread_t ta, tb;
    cr_assert_eq(pthread_create(&ta, NULL, lc_call, a), 0);
    cr_assert_eq(pthread_create(&tb, NULL, lc_call, b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&bar);
    a->start = b->start = NULL;
}

/* A free lease asked for by both at once, many times: exactly one wins each time, the loser
 * says so (follower, or lease lost to the winner's write), and each round takes exactly one
 * new generation.  (GET_LOCK on Galera let both win about 70 % of the time.) */
static void case_lease_race(const lease_harness *h, int rounds)
{
    kg_store *a = h->open_a();
    kg_store *b = h->open_b();
    lease_call ca = {.s = a, .id = "ctl-a", .ttl_ms = 30000};
    lease_call cb = {.s = b, .id = "ctl-b", .ttl_ms = 30000};
    int wins_a = 0, wins_b = 0, lost = 0;
    int64_t last_gen = 0;
    for (int r = 0; r < rounds; r++) {
        /* both stores forget they held it; the row says released */
        char err[LEASE_ERRLEN];
        cr_assert_eq(a->ops->release_lease(a, err, sizeof(err)), STORE_OK, "%s", err);
        cr_assert_eq(b->ops->release_lease(b, err, sizeof(err)), STORE_OK, "%s", err);
        h->exec("UPDATE kumaguard_leader SET expires_at = NULL WHERE id = 1");
        lc_race(&ca, &cb);
        cr_assert(ca.rc == STORE_OK || ca.rc == STORE_FENCED, "round %d A: %s", r, ca.err);
        cr_assert(cb.rc == STORE_OK || cb.rc == STORE_FENCED, "round %d B: %s", r, cb.err);
        cr_assert(ca.leader != cb.leader, "round %d: A leader %d, B leader %d (gens %lld %lld)",
                  r, ca.leader, cb.leader, (long long)ca.gen, (long long)cb.gen);
        lost += (ca.rc == STORE_FENCED) + (cb.rc == STORE_FENCED);
        int64_t gen = ca.leader ? ca.gen : cb.gen;
        if (r > 0)
            cr_assert_eq(gen, last_gen + 1, "round %d: generation %lld after %lld", r,
                         (long long)gen, (long long)last_gen);
        if (cb.rc == STORE_OK && ca.leader)
            cr_expect_eq(cb.gen, gen, "the follower reports the winner's generation");
        if (ca.rc == STORE_OK && cb.leader)
            cr_expect_eq(ca.gen, gen, "the follower reports the winner's generation");
        last_gen = gen;
        wins_a += ca.leader;
        wins_b += cb.leader;
    }
    cr_expect_eq(h->query_int("SELECT generation FROM kumaguard_leader WHERE id = 1"), last_gen);
    fprintf(stderr, "lease race: %d rounds, A won %d, B won %d, %d answered 'lease lost'\n",
            rounds, wins_a, wins_b, lost);
    store_close(a);
    store_close(b);
}

/* Settled: both controllers renew/ask every 100 ms for a while.  The leader and its generation
 * never change (no churn) and the follower never leads. */
static void case_lease_steady(const lease_harness *h, int ms)
{
    kg_store *a = h->open_a();
    kg_store *b = h->open_b();
    lease_call ca = {.s = a, .id = "ctl-a", .ttl_ms = 3000};
    lease_call cb = {.s = b, .id = "ctl-b", .ttl_ms = 3000};
    lc_call(&ca);
    cr_assert_eq(ca.rc, STORE_OK, "%s", ca.err);
    cr_assert(ca.leader);
    int64_t gen = ca.gen;
    int calls = 0;
    for (int64_t end = lc_now_ms() + ms; lc_now_ms() < end; calls++) {
        lc_race(&ca, &cb);
        cr_assert_eq(ca.rc, STORE_OK, "%s", ca.err);
        cr_assert_eq(cb.rc, STORE_OK, "%s", cb.err);
        cr_assert(ca.leader, "the leader lost a lease it renews in time");
        cr_assert_not(cb.leader, "the follower took a lease that is being renewed");
        cr_assert_eq(ca.gen, gen, "generation churn while settled");
        cr_assert_eq(cb.gen, gen);
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "lease steady: %d rounds, generation stayed %lld\n", calls, (long long)gen);
    store_close(a);
    store_close(b);
}

/* A released lease is taken at once; one that is not released only after its TTL. */
static void case_lease_release(const lease_harness *h)
{
    kg_store *a = h->open_a();
    kg_store *b = h->open_b();
    char err[LEASE_ERRLEN] = "";
    bool leader = false;
    int64_t g1 = 0, g = 0;
    cr_assert_eq(a->ops->lease(a, "ctl-a", 30000, &leader, &g1, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_assert(leader);
    cr_assert_eq(b->ops->lease(b, "ctl-b", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_assert_not(leader);
    cr_assert_eq(a->ops->release_lease(a, err, sizeof(err)), STORE_OK, "%s", err);
    cr_assert_eq(b->ops->lease(b, "ctl-b", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect(leader, "a released lease is free");
    cr_expect_eq(g, g1 + 1);
    /* a, which released, does not renew its old generation */
    cr_assert_eq(a->ops->lease(a, "ctl-a", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect_not(leader);
    cr_expect_eq(g, g1 + 1);
    /* b's writes carry its generation; a's old one is fenced */
    kg_event ev = {.kind = EV_LEADER};
    a->fence_generation = g1;
    cr_expect_eq(a->ops->append_event(a, &ev, err, sizeof(err)), STORE_FENCED);
    b->fence_generation = g1 + 1;
    cr_expect_eq(b->ops->append_event(b, &ev, err, sizeof(err)), STORE_OK, "%s", err);
    /* b closes without releasing (a crash): a must wait for the TTL */
    store_close(b);
    cr_assert_eq(a->ops->lease(a, "ctl-a", 30000, &leader, &g, err, sizeof(err)), STORE_OK,
                 "%s", err);
    cr_expect_not(leader, "a lease is not tied to a connection: closing does not free it");
    store_close(a);
}

#endif
