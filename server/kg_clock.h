/* kg_clock.h — the clock readings and timed-wait deadlines the worker threads added for issue
 * 14 (setup_watch.c, webhook.c) share.  Header only: small static inline functions.
 *
 * Owns: nothing.  Must not: grow policy (what to wait for is the caller's). */
#ifndef KG_CLOCK_H
#define KG_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Wall clock, ms since the epoch (for times shown or stored). */
static inline int64_t kg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic clock, ms (for intervals: a wall-clock step cannot stretch them). */
static inline int64_t kg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Absolute CLOCK_MONOTONIC deadline `ms` from now, for a condition variable created with
 * pthread_condattr_setclock(CLOCK_MONOTONIC). */
static inline struct timespec kg_deadline_in(int64_t ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(ms / 1000);
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

#endif
