/* lease.h — when this controller may act as the leader: the self-demotion rule.  Pure: the
 * store's answers and the monotonic clock go in, the role and what changed come out.  It
 * never reads a clock, touches the store or logs.
 *
 * The store grants the lease for `ttl` from the moment the *database* ran the call, by the
 * database's clock (store.h).  The controller cannot see that clock, and its own wall clock
 * may step; what it can trust is its monotonic clock and the moment it *sent* the call, which
 * is no later than the moment the database granted it.  So a successful renewal sent at S
 * lets this controller lead until
 *
 *     S + ttl - margin        (monotonic)
 *
 * and past that, without a newer successful renewal, it stops leading whatever the database
 * says or fails to say.  "Monotonic" here means a clock that never steps and keeps counting
 * while the machine is suspended (CLOCK_BOOTTIME): the database's clock runs on meanwhile.
 * A reply that took seconds (a hung database) buys little or nothing:
 * its deadline counts from when it was sent.  Renewals are due every ttl/3, so two may fail
 * before the deadline.  `margin` covers what the controller cannot measure: the skew between
 * the clocks of database nodes (each Galera node computes expiry with its own clock) and
 * clock rate differences; lease_margin_ms() gives the default, ttl/5.
 *
 * Owns: that rule and the role it implies.  Must not: decide anything else about leadership
 * (the store arbitrates who holds the lease; this only says how long a grant may be used). */
#ifndef KG_LEASE_H
#define KG_LEASE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t ttl_ms;
    int64_t margin_ms;
} lease_timing;

/* What the store said to one lease call. */
typedef enum {
    LEASE_NO_ANSWER, /* no call made (database unavailable) or it failed: STORE_ERROR */
    LEASE_GRANTED,   /* STORE_OK, leader: we hold the lease with `generation` */
    LEASE_REFUSED,   /* STORE_OK, not leader: another controller holds it (`generation`) */
    LEASE_LOST,      /* STORE_FENCED: lost in a conflict (another database node's write won) */
} lease_answer;

typedef struct {
    bool leader;
    int64_t generation;     /* the one we lead with, or the last one seen */
    int64_t valid_until_ms; /* monotonic: leading allowed while now < this (when leader) */
} lease_state;

typedef enum {
    LEASE_KEEP,          /* role and generation unchanged */
    LEASE_BECAME_LEADER, /* became leader, or leads again with another generation */
    LEASE_STEP_DOWN_LOST,    /* the store says another controller holds it, or a conflict */
    LEASE_STEP_DOWN_EXPIRED, /* no successful renewal in time: self-demotion */
} lease_action;

/* Default margin for a ttl: ttl/5. */
int64_t lease_margin_ms(int64_t ttl_ms);

/* Updates *st for one answer (LEASE_NO_ANSWER also for "no call, just the clock moved").
 * `sent_ms` is the monotonic time the call was sent (ignored for LEASE_NO_ANSWER), `now_ms`
 * the monotonic time now.  A grant whose deadline has already passed is no grant. */
lease_action lease_decide(lease_state *st, const lease_timing *t, lease_answer answer,
                          int64_t generation, int64_t sent_ms, int64_t now_ms);

/* Milliseconds of leadership left at now_ms (<= 0 when not leading). */
int64_t lease_ms_left(const lease_state *st, int64_t now_ms);

#endif
