/* clock.h — the one place kumaguard reads clocks and builds timed waits.
 *
 * Two clocks, for two purposes:
 *   - monotonic (kg_mono_ms): every timer, deadline, interval and "how long since".  A step of
 *     the wall clock (NTP at boot, a VM restored from a snapshot) cannot stretch or cut them.
 *     (Timed waits below use CLOCK_MONOTONIC, which does not count a suspend; they are only
 *     ever relative waits of a second or so, re-checked against kg_mono_ms.)
 *   - wall (kg_wall_ms): what is shown and stored (event times, node.last_seen) and the Kuma
 *     nodes' minute cron, which runs on their wall clocks.
 * Condition variables that are waited on with a timeout are created on the monotonic clock
 * (kg_cond_init) and their deadlines built with kg_deadline_in.
 *
 * Owns: nothing but these helpers.  Must not: keep state. */
#ifndef KG_CLOCK_H
#define KG_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_BOOTTIME (arbitrary origin): monotonic, and it keeps counting while
 * the machine is suspended — the database's clock and the nodes' do too, so a lease or a
 * hold-down is not stretched by a suspend. */
int64_t kg_mono_ms(void);
/* Milliseconds since the Unix epoch, UTC (CLOCK_REALTIME). */
int64_t kg_wall_ms(void);
/* Initialises a condition variable whose timed waits use CLOCK_MONOTONIC.  0 or an errno. */
int kg_cond_init(pthread_cond_t *c);
/* Absolute CLOCK_MONOTONIC time `ms` milliseconds from now, for pthread_cond_timedwait on a
 * condition variable made by kg_cond_init.  Negative ms counts as 0. */
struct timespec kg_deadline_in(int64_t ms);

#endif
