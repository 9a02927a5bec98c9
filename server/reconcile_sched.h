/* reconcile_sched.h — when to ask a Kuma node to reconcile, so that no monitor ever runs twice
 * (issue: exactly-once with real Kuma nodes).  Pure: the node's pending work, the clock and
 * the outcome of earlier calls go in; "call now, with this deadline" or "wait until" comes out.
 * It never sends anything, logs or reads a clock.
 *
 * The facts it is built on (a real cluster-aware Kuma node):
 *   - POST /api/v1/reconcile-monitors re-reads the node's assignments, starts each missing
 *     monitor (then sleeps 100-300 ms) and stops each unwanted one (50-150 ms), and answers
 *     only when all of that is done.
 *   - The node runs the same reconcile from a cron at second :00 of every minute of its own
 *     clock.
 *   - Two reconciles overlapping on one node (two calls, or a call and the cron) can start a
 *     monitor twice; one copy is then never stopped until the node restarts.
 *   - Calls are rate limited per client address (429), and refused before the first user
 *     exists (401).
 * So, per node:
 *   1. at most one call in flight;
 *   2. its deadline is the worst case of the work asked (base + starts*start_ms +
 *      stops*stop_ms, capped);
 *   3. a call whose deadline passed may still be running on the node (a hung node runs it when
 *      it wakes up, on the monitor set of that moment): no new call until the node answers
 *      probes again and the worst case of the stale call, or of all work pending by then if
 *      more, has passed since; a node that answered probes all along was only slower than
 *      the configured costs: it gets four times the deadline in all, and its later deadlines
 *      (and pacing) count it four times slower, until quick answers show otherwise;
 *   4. no call that could still be running when the node's :00 cron starts (allowing
 *      `cron_skew_ms` between its clock and ours), and none while that cron may be running —
 *      its worst case counts all work it may have seen, including changes kumaguard did not
 *      make (Kuma adding or pausing monitors, which the caller reports as work too), and a
 *      cron a hung node was stopped in resumes with the node; work that cannot be done before
 *      :00 is left to the cron;
 *   5. after a cron window in which the node kept answering probes, work committed before
 *      that cron is done: it is forgotten, not called for;
 *   6. a node that comes back after failing must be told before it is routed again
 *      (`tell_first`): the same rules, and the cron also counts as telling;
 *   7. 429 and 401 leave the work to the cron (retrying would only spend the node's rate
 *      budget); other failures are retried a few times with back-off, then left to the cron;
 *   8. at most `budget` calls per node per `budget_window_ms`, so kumaguard never spends the
 *      node's whole per-address rate limit (proxied users may share that address).
 *
 * Times: every time here is on the caller's monotonic clock.  The cron runs on wall clocks, so
 * calls take `wall_offset_ms` (wall - monotonic, now) to find the next :00. */
#ifndef KG_RECONCILE_SCHED_H
#define KG_RECONCILE_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#define RSCHED_BUDGET_MAX 128

typedef struct {
    int64_t base_ms;           /* fixed worst case of any call (query, answer, network) */
    int64_t start_ms;          /* worst case per monitor the node starts */
    int64_t stop_ms;           /* worst case per monitor the node stops */
    int64_t timeout_max_ms;    /* cap on one call's deadline */
    int64_t cron_skew_ms;      /* how far a node's clock may be from ours */
    int64_t cron_period_ms;    /* 60000: the node's cron runs at :00 of every minute */
    int budget;                /* calls per node per window (1..RSCHED_BUDGET_MAX) */
    int64_t budget_window_ms;  /* the node's limiter window (15 min) */
    int max_retries;           /* failed calls (other than 401/429) retried this often */
    int64_t retry_ms;          /* first back-off; doubles per retry */
} rsched_cfg;

typedef enum {
    RS_NONE = 0,
    RS_OK,
    RS_TIMEOUT,                /* no answer by the deadline: may still be running */
    RS_RATE_LIMITED,           /* 429 */
    RS_UNAUTHORIZED,           /* 401: no first user yet, or a Bearer key */
    RS_HTTP_ERROR,             /* another non-2xx answer */
    RS_CONNECT_FAILED          /* no connection (refused, unreachable): it never ran */
} rsched_result;

const char *rsched_result_name(rsched_result r);

#define RSCHED_WORK_SLOTS 8

/* Work committed at one time (merged with its neighbour when the slots run out, keeping the
 * later time: a cron is then only trusted with it later, never earlier). */
typedef struct {
    int64_t at_ms;             /* committed no later than this */
    int64_t from_ms;           /* and no earlier than this (== at_ms for our own moves) */
    int starts, stops;
    bool foreign;              /* not ours: counts toward a run's worst case, asks for no call */
} rsched_work;

typedef struct {
    /* work the node has not been seen doing, oldest first; starts/stops are the sums */
    rsched_work work[RSCHED_WORK_SLOTS];
    int n_work;
    int starts, stops;
    bool tell_first;           /* came back after failing: tell it before it is routed */
    /* the call in flight */
    bool in_flight;
    int64_t call_start_ms, call_deadline_ms;
    bool call_tell;
    /* a call that timed out (rule 3) */
    bool stale;
    int64_t stale_since_ms, stale_worst_ms;
    int slow_factor;           /* this node's costs are this many times the configured ones */
    int64_t busy_until_ms;
    /* back-off and retries (rule 7) */
    int64_t not_before_ms;
    int retries;
    bool wait_cron;            /* leave the pending work to the next cron */
    /* rate budget (rule 8): start times of the last calls, a ring */
    int64_t budget_ring[RSCHED_BUDGET_MAX];
    int budget_used;           /* entries in the ring (<= budget) */
    int budget_head;
    /* reporting */
    rsched_result last_result;
    int last_http;
    int64_t last_call_ms;      /* start of the last finished call (0 = never) */
    int64_t last_duration_ms;
    int64_t calls, failures, timeouts, rate_limited, unauthorized, left_to_cron;
    const char *waiting;       /* why the pending work waits (static text), NULL when idle */
} rsched_node;

typedef struct {
    bool call;                 /* start a call now */
    int64_t deadline_ms;       /* its deadline, relative (ms) */
    int64_t wake_ms;           /* otherwise: re-evaluate no later than this (0 = no need) */
} rsched_decision;

void rsched_cfg_default(rsched_cfg *c);
void rsched_init(rsched_node *n);

/* The node's monitor set changed: it must start `starts` and stop `stops` monitors.  `now` is
 * when the change was committed. */
void rsched_add_work(rsched_node *n, int starts, int stops, int64_t now_ms);
/* Work kumaguard did not cause (Kuma added, removed, paused or re-pinned monitors), noticed by
 * comparing two reads of the monitor table: committed somewhere between from_ms and to_ms.
 * It asks for no call (the node's own cron picks it up, as it would without kumaguard) but
 * lengthens the worst case of the node's next run, and a call made anyway covers it. */
void rsched_add_work_between(rsched_node *n, int starts, int stops, int64_t from_ms,
                             int64_t to_ms);
/* The node failed (went offline): when it answers again it must be told first. */
void rsched_mark_returning(rsched_node *n);
/* Does the node still have to be told before it may be routed? */
bool rsched_must_tell(const rsched_node *n);

/* Decides for one node.  `callable`: the caller can reach and authenticate to it (usable host,
 * key configured, routable or returning).  `alive_since_ms`: since when the node has answered
 * every probe (0 = it is failing now).  Starting a call (decision.call) updates n: the caller
 * must then send it, and report its outcome with rsched_finish. */
rsched_decision rsched_next(rsched_node *n, const rsched_cfg *c, bool callable,
                            int64_t alive_since_ms, int64_t now_ms, int64_t wall_offset_ms);

/* Outcome of the call in flight. */
void rsched_finish(rsched_node *n, const rsched_cfg *c, rsched_result r, int http_status,
                   int64_t now_ms, int64_t wall_offset_ms);

/* Pacing (rule 4 seen from the other side): how much more worst-case work, in ms of the
 * configured costs (a node counted slower gets that much less), the node can be given now so that a reconcile of everything pending still ends before its next cron
 * starts — by our call when `callable`, else by that cron, which must end before the one after
 * it.  0 while a call is in flight or may still be running, or inside a cron window.  Moves
 * beyond it wait: a node asked to start more than it can before :00 would have its cron
 * overlap the reconcile, which is how copies leak. */
int64_t rsched_room_ms(rsched_node *n, const rsched_cfg *c, bool callable,
                       int64_t alive_since_ms, int64_t now_ms, int64_t wall_offset_ms);

/* Worst-case duration of a reconcile doing this much work. */
int64_t rsched_worst_ms(const rsched_cfg *c, int starts, int stops);
/* Start of the node's next cron (monotonic ms), given wall_offset_ms. */
int64_t rsched_next_cron_ms(const rsched_cfg *c, int64_t now_ms, int64_t wall_offset_ms);

#endif
