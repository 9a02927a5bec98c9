/* lease.c — the self-demotion rule of lease.h.  Pure (no clock, no I/O). */
#include "lease.h"

int64_t lease_margin_ms(int64_t ttl_ms)
{
    return ttl_ms > 0 ? ttl_ms / 5 : 0;
}

int64_t lease_ms_left(const lease_state *st, int64_t now_ms)
{
    return st->leader ? st->valid_until_ms - now_ms : 0;
}

static lease_action step_down(lease_state *st, lease_action why)
{
    bool was = st->leader;
    st->leader = false;
    st->valid_until_ms = 0;
    return was ? why : LEASE_KEEP;
}

lease_action lease_decide(lease_state *st, const lease_timing *t, lease_answer answer,
                          int64_t generation, int64_t sent_ms, int64_t now_ms)
{
    switch (answer) {
    case LEASE_GRANTED: {
        int64_t until = sent_ms + t->ttl_ms - t->margin_ms;
        if (until <= now_ms) /* the answer came too late to be used */
            break;
        bool fresh = !st->leader || generation != st->generation;
        st->leader = true;
        st->generation = generation;
        /* a newer grant never shortens what an older one allowed within one generation */
        if (fresh || until > st->valid_until_ms)
            st->valid_until_ms = until;
        return fresh ? LEASE_BECAME_LEADER : LEASE_KEEP;
    }
    case LEASE_REFUSED:
        st->generation = generation;
        return step_down(st, LEASE_STEP_DOWN_LOST);
    case LEASE_LOST:
        return step_down(st, LEASE_STEP_DOWN_LOST);
    case LEASE_NO_ANSWER:
        break;
    }
    if (st->leader && now_ms >= st->valid_until_ms)
        return step_down(st, LEASE_STEP_DOWN_EXPIRED);
    return LEASE_KEEP;
}
