/* reconcile_sched.c — when to ask a Kuma node to reconcile (rules in reconcile_sched.h).
 *
 * Owns: the per-node call bookkeeping.  Must not: send, log, or read a clock. */
#include "reconcile_sched.h"

#include <string.h>

/* A node that timed out while answering probes is taken to be this many times slower than the
 * configured costs (up to SLOW_MAX); after a few quick answers it is trusted again. */
#define SLOW_STEP 4
#define SLOW_MAX 16

const char *rsched_result_name(rsched_result r)
{
    switch (r) {
    case RS_NONE: return "none";
    case RS_OK: return "ok";
    case RS_TIMEOUT: return "timeout";
    case RS_RATE_LIMITED: return "rate_limited";
    case RS_UNAUTHORIZED: return "unauthorized";
    case RS_HTTP_ERROR: return "http_error";
    case RS_CONNECT_FAILED: return "connect_failed";
    }
    return "none";
}

void rsched_cfg_default(rsched_cfg *c)
{
    *c = (rsched_cfg){
        .base_ms = 1000,
        .start_ms = 320,
        .stop_ms = 160,
        .timeout_max_ms = 600000,
        .cron_skew_ms = 2000,
        .cron_period_ms = 60000,
        .budget = 30,
        .budget_window_ms = 15 * 60000,
        .max_retries = 3,
        .retry_ms = 2000,
    };
}

void rsched_init(rsched_node *n) { memset(n, 0, sizeof *n); }

int64_t rsched_worst_ms(const rsched_cfg *c, int starts, int stops)
{
    return c->base_ms + (int64_t)starts * c->start_ms + (int64_t)stops * c->stop_ms;
}

/* This node's worst case: the configured costs times how much slower this node has shown it
 * is (slow_factor, 1 until a call timed out while the node kept answering probes). */
static int64_t node_worst(const rsched_node *n, const rsched_cfg *c, int starts, int stops)
{
    return rsched_worst_ms(c, starts, stops) * (n->slow_factor > 1 ? n->slow_factor : 1);
}

/* Start of the cron at or before `now` (monotonic ms). */
static int64_t prev_cron(const rsched_cfg *c, int64_t now_ms, int64_t off)
{
    int64_t wall = now_ms + off;
    int64_t p = c->cron_period_ms > 0 ? c->cron_period_ms : 60000;
    int64_t b = wall - ((wall % p) + p) % p;
    return b - off;
}

int64_t rsched_next_cron_ms(const rsched_cfg *c, int64_t now_ms, int64_t wall_offset_ms)
{
    return prev_cron(c, now_ms, wall_offset_ms) +
           (c->cron_period_ms > 0 ? c->cron_period_ms : 60000);
}

static bool has_work(const rsched_node *n) { return n->n_work > 0; }

/* Work that asks for a call: ours (moves kumaguard applied). */
static bool has_own_work(const rsched_node *n)
{
    for (int i = 0; i < n->n_work; i++)
        if (!n->work[i].foreign)
            return true;
    return false;
}

static int64_t worst_before(const rsched_node *n, const rsched_cfg *c, int64_t t);

/* When the cron that started at `prev` may still be running.  Its worst case covers the work
 * it may have seen (committed up to prev + skew: a node clock behind ours runs it later).  And
 * a node that was not answering at some point since that cron could start (hung: SIGSTOP, a
 * stalled VM) may have been stopped in the middle of it: the run resumes when the node does,
 * so it may last its worst case from the moment the node answers again. */
static int64_t cron_end(const rsched_node *n, const rsched_cfg *c, int64_t prev,
                        int64_t alive_since)
{
    int64_t w = worst_before(n, c, prev + c->cron_skew_ms);
    int64_t end = prev + c->cron_skew_ms + w;
    if (alive_since > prev - c->cron_skew_ms && alive_since + w > end)
        end = alive_since + w;
    return end;
}

static void sum_work(rsched_node *n)
{
    n->starts = n->stops = 0;
    for (int i = 0; i < n->n_work; i++) {
        n->starts += n->work[i].starts;
        n->stops += n->work[i].stops;
    }
}

/* Drops the work committed before `t` (done by a call that started at t, or by a cron). */
static void drop_work_before(rsched_node *n, int64_t t)
{
    int w = 0;
    for (int i = 0; i < n->n_work; i++)
        if (n->work[i].at_ms >= t)
            n->work[w++] = n->work[i];
    n->n_work = w;
    sum_work(n);
}

/* Worst case of the work that may have been committed before `t` (a cron starting at t may
 * have it to do). */
static int64_t worst_before(const rsched_node *n, const rsched_cfg *c, int64_t t)
{
    int s = 0, p = 0;
    for (int i = 0; i < n->n_work; i++)
        if (n->work[i].from_ms < t) {
            s += n->work[i].starts;
            p += n->work[i].stops;
        }
    return node_worst(n, c, s, p);
}

static void add_work(rsched_node *n, int starts, int stops, int64_t from_ms, int64_t now_ms,
                     bool foreign)
{
    if (starts <= 0 && stops <= 0)
        return;
    if (from_ms > now_ms)
        from_ms = now_ms;
    if (n->n_work > 0 && n->work[n->n_work - 1].at_ms == now_ms &&
        n->work[n->n_work - 1].from_ms == from_ms && n->work[n->n_work - 1].foreign == foreign) {
        n->work[n->n_work - 1].starts += starts > 0 ? starts : 0;
        n->work[n->n_work - 1].stops += stops > 0 ? stops : 0;
    } else {
        if (n->n_work == RSCHED_WORK_SLOTS) {
            /* merge the two oldest into the later of them */
            n->work[1].starts += n->work[0].starts;
            n->work[1].stops += n->work[0].stops;
            if (n->work[0].from_ms < n->work[1].from_ms)
                n->work[1].from_ms = n->work[0].from_ms;
            n->work[1].foreign = n->work[0].foreign && n->work[1].foreign;
            memmove(n->work, n->work + 1, sizeof n->work[0] * (RSCHED_WORK_SLOTS - 1));
            n->n_work--;
        }
        n->work[n->n_work++] = (rsched_work){.at_ms = now_ms,
                                             .from_ms = from_ms,
                                             .foreign = foreign,
                                             .starts = starts > 0 ? starts : 0,
                                             .stops = stops > 0 ? stops : 0};
    }
    sum_work(n);
}

void rsched_add_work(rsched_node *n, int starts, int stops, int64_t now_ms)
{
    add_work(n, starts, stops, now_ms, now_ms, false);
}

void rsched_add_work_between(rsched_node *n, int starts, int stops, int64_t from_ms,
                             int64_t to_ms)
{
    add_work(n, starts, stops, from_ms, to_ms, true);
}

void rsched_mark_returning(rsched_node *n) { n->tell_first = true; }

bool rsched_must_tell(const rsched_node *n) { return n->tell_first; }

/* Rule 5: a cron that started at `b` while the node kept answering, and whose worst-case run
 * is over, did the work committed before it (and told the node).  Returns true when it
 * applies (the caller then drops that work). */
static bool cron_covered(const rsched_node *n, const rsched_cfg *c, int64_t b,
                         int64_t alive_since, int64_t now)
{
    if (!alive_since || alive_since > b - c->cron_skew_ms)
        return false;
    return now >= b + c->cron_skew_ms + worst_before(n, c, b - c->cron_skew_ms);
}

static void left_to_cron(rsched_node *n, int64_t b, const rsched_cfg *c)
{
    int before = n->n_work;
    bool told = n->tell_first;
    drop_work_before(n, b - c->cron_skew_ms);
    n->tell_first = false;
    if (n->n_work != before || told)
        n->left_to_cron++;
    if (!has_work(n)) {
        n->wait_cron = false;
        n->retries = 0;
    }
}

static int budget_left(rsched_node *n, const rsched_cfg *c, int64_t now)
{
    int budget = c->budget < 1 ? 1
                 : c->budget > RSCHED_BUDGET_MAX ? RSCHED_BUDGET_MAX
                                                 : c->budget;
    /* drop calls that left the window (the ring is in start order from budget_head) */
    while (n->budget_used > 0) {
        int oldest = (n->budget_head - n->budget_used + RSCHED_BUDGET_MAX) % RSCHED_BUDGET_MAX;
        if (now - n->budget_ring[oldest] < c->budget_window_ms)
            break;
        n->budget_used--;
    }
    return budget - n->budget_used;
}

static rsched_decision wait_until(rsched_node *n, const char *why, int64_t t)
{
    n->waiting = why;
    return (rsched_decision){.wake_ms = t};
}

rsched_decision rsched_next(rsched_node *n, const rsched_cfg *c, bool callable,
                            int64_t alive_since, int64_t now, int64_t off)
{
    n->waiting = NULL;
    if (n->in_flight)
        return wait_until(n, "a call is in flight", n->call_deadline_ms);
    if (n->stale) {
        /* rule 3: the timed-out call runs whenever the node wakes up; count its worst case
         * from the moment it answers again.  A node that answered probes all along is slower
         * than our worst case, not hung: it gets as long again from the deadline. */
        if (!alive_since)
            return wait_until(n, "a timed-out call may still be running on the node", 0);
        /* A hung node reads its monitor set only when it wakes: the stale call then does all
         * the work pending by then (a timeout leaves the call's own work pending), the moves
         * made while it hung included (its own monitors, moved away because it hung).  The
         * exactly-once scenario caught a call for 5 stops that ran 19 after the thaw. */
        int64_t pending = node_worst(n, c, n->starts, n->stops);
        int64_t until = alive_since + (pending > n->stale_worst_ms ? pending : n->stale_worst_ms);
        if (alive_since <= n->stale_since_ms) {
            /* it answered probes all along: slower than the configured costs, not hung.  It
             * gets SLOW_STEP times the deadline in all, and its later deadlines as much. */
            until = n->stale_since_ms + n->stale_worst_ms * (SLOW_STEP - 1);
            int f = (n->slow_factor > 1 ? n->slow_factor : 1) * SLOW_STEP;
            n->slow_factor = f > SLOW_MAX ? SLOW_MAX : f;
        }
        n->stale = false;
        if (until > n->busy_until_ms)
            n->busy_until_ms = until;
    }
    if (!has_work(n) && !n->tell_first)
        return (rsched_decision){0};
    int64_t prev = prev_cron(c, now, off), next = prev + c->cron_period_ms;
    if (cron_covered(n, c, prev - c->cron_period_ms, alive_since, now))
        left_to_cron(n, prev - c->cron_period_ms, c);
    if (cron_covered(n, c, prev, alive_since, now))
        left_to_cron(n, prev, c);
    if (!has_own_work(n) && !n->tell_first)
        return (rsched_decision){0}; /* only foreign work (or none): the cron does it */
    int64_t worst = node_worst(n, c, n->starts, n->stops);
    int64_t after_cron = next + c->cron_skew_ms + worst; /* when the next cron surely ended */
    if (!callable)
        return wait_until(n, "the node cannot be called now: left to its cron", after_cron);
    if (now < n->busy_until_ms)
        return wait_until(n, "a timed-out call may still be running on the node",
                          n->busy_until_ms);
    if (n->wait_cron)
        return wait_until(n, "left to the node's cron after a refused call", after_cron);
    if (now < n->not_before_ms)
        return wait_until(n, "backing off after a failed call", n->not_before_ms);
    if (budget_left(n, c, now) <= 0)
        return wait_until(n, "call budget for this node spent: left to its cron", after_cron);
    /* rule 4: not while the last cron may still run, nor if we could still run at the next */
    /* (a cron whose clock lags ours by the skew may also have seen work up to prev + skew) */
    int64_t prev_end = cron_end(n, c, prev, alive_since);
    if (now < prev_end)
        return wait_until(n, "the node's cron may be running", prev_end);
    if (now + worst >= next - c->cron_skew_ms)
        return wait_until(n, "too close to the node's :00 cron: left to it", after_cron);
    n->in_flight = true;
    n->call_start_ms = now;
    n->call_deadline_ms = now + (worst < c->timeout_max_ms ? worst : c->timeout_max_ms);
    n->call_tell = n->tell_first;
    n->budget_ring[n->budget_head] = now;
    n->budget_head = (n->budget_head + 1) % RSCHED_BUDGET_MAX;
    n->budget_used++;
    n->calls++;
    return (rsched_decision){.call = true, .deadline_ms = n->call_deadline_ms - now};
}

int64_t rsched_room_ms(rsched_node *n, const rsched_cfg *c, bool callable,
                       int64_t alive_since, int64_t now, int64_t off)
{
    int64_t worst = node_worst(n, c, n->starts, n->stops);
    int64_t prev = prev_cron(c, now, off), next = prev + c->cron_period_ms;
    int64_t room;
    if (!callable) {
        /* the next cron does it all and must be over before the one after it */
        room = c->cron_period_ms - 2 * c->cron_skew_ms - worst;
    } else {
        if (n->in_flight || n->stale || now < n->busy_until_ms)
            return 0;
        if (now < cron_end(n, c, prev, alive_since))
            return 0; /* the last cron may still run */
        room = next - c->cron_skew_ms - now - worst;
    }
    return room > 0 ? room / (n->slow_factor > 1 ? n->slow_factor : 1) : 0;
}

void rsched_finish(rsched_node *n, const rsched_cfg *c, rsched_result r, int http_status,
                   int64_t now, int64_t off)
{
    if (!n->in_flight)
        return;
    n->in_flight = false;
    n->last_result = r;
    n->last_http = http_status;
    n->last_call_ms = n->call_start_ms;
    n->last_duration_ms = now - n->call_start_ms;
    switch (r) {
    case RS_OK:
        /* the node re-read its assignments when the call started: what was pending then is
         * done; what arrived during the call is not */
        drop_work_before(n, n->call_start_ms + 1);
        /* a call that took under a quarter of its deadline: this node is faster than we feared */
        int64_t took = now - n->call_start_ms, allowed = n->call_deadline_ms - n->call_start_ms;
        if (n->slow_factor > 1 && took * 4 < allowed)
            n->slow_factor /= 2;
        if (n->call_tell)
            n->tell_first = false;
        n->retries = 0;
        n->wait_cron = false;
        return;
    case RS_TIMEOUT:
        n->failures++;
        n->timeouts++;
        n->stale = true;
        n->stale_since_ms = now;
        n->stale_worst_ms = n->call_deadline_ms - n->call_start_ms;
        return;
    case RS_RATE_LIMITED:
    case RS_UNAUTHORIZED:
        n->failures++;
        if (r == RS_RATE_LIMITED)
            n->rate_limited++;
        else
            n->unauthorized++;
        n->wait_cron = true; /* retrying spends the node's budget and changes nothing */
        return;
    case RS_HTTP_ERROR:
    case RS_CONNECT_FAILED:
    case RS_NONE:
        n->failures++;
        if (++n->retries > c->max_retries) {
            n->wait_cron = true;
            return;
        }
        n->not_before_ms = now + (c->retry_ms << (n->retries - 1 < 10 ? n->retries - 1 : 10));
        (void)off;
        return;
    }
}
