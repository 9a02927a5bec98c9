/*
 * model.c — a Kuma node process as pure functions (see model.h for the behaviour modelled).
 *
 * Owns: the monitor list and leaked copies of a node process, run step logic, cron time
 * arithmetic, the rate-limit table and the delay RNG.  Must not: sleep, lock, read clocks,
 * log, or do I/O; every time comes in as an argument.
 */
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* ============================== monitor list ============================== */

uint32_t model_copies(const struct node_proc *p, int64_t id)
{
	return idmap_get(&p->listed, id) + idmap_get(&p->leaked, id);
}

bool model_populate(struct node_proc *p, const int64_t *wanted, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!idmap_set(&p->listed, wanted[i], 1))
			return false;
	return true;
}

void model_clear(struct node_proc *p)
{
	idmap_clear(&p->listed);
	idmap_clear(&p->leaked);
	p->leaked_total = 0;
}

void model_free(struct node_proc *p)
{
	idmap_free(&p->listed);
	idmap_free(&p->leaked);
}

/* ============================== runs ============================== */

static void link_active(struct node_proc *p, struct run *r)
{
	r->prev_active = NULL;
	r->next_active = p->active;
	if (p->active != NULL)
		p->active->prev_active = r;
	p->active = r;
	p->active_runs++;
	if (r->rec.trigger == TRIGGER_CRON)
		p->active_cron_runs++;
}

static void unlink_active(struct node_proc *p, struct run *r)
{
	if (r->prev_active != NULL)
		r->prev_active->next_active = r->next_active;
	else if (p->active == r)
		p->active = r->next_active;
	else
		return; /* not linked */
	if (r->next_active != NULL)
		r->next_active->prev_active = r->prev_active;
	r->next_active = r->prev_active = NULL;
	p->active_runs--;
	if (r->rec.trigger == TRIGGER_CRON)
		p->active_cron_runs--;
}

struct run *model_run_begin(struct node_proc *p, enum run_trigger trigger, const int64_t *wanted,
			    size_t n_wanted, int64_t now_ms, uint64_t run_id)
{
	struct run *r = calloc(1, sizeof(*r));
	struct idmap want = { 0 };
	size_t n_listed = 0;
	int64_t *listed = NULL;

	if (r == NULL)
		return NULL;
	r->rec.id = run_id;
	r->rec.trigger = (uint8_t)trigger;
	r->rec.result = RUN_RUNNING;
	r->rec.start_ms = now_ms;
	/* "running" is computed here, once; the steps below never look at the list again to
	 * decide what to do, exactly like the real node. */
	for (size_t i = 0; i < n_wanted; i++)
		if (!idmap_set(&want, wanted[i], 1))
			goto oom;
	r->rec.wanted = (uint32_t)want.len;
	if (want.len > 0) {
		r->start_ids = malloc(want.len * sizeof(int64_t));
		if (r->start_ids == NULL)
			goto oom;
	}
	for (size_t i = 0; i < n_wanted; i++) {
		if (idmap_get(&p->listed, wanted[i]) == 0 &&
		    (r->n_start == 0 || r->start_ids[r->n_start - 1] != wanted[i]))
			r->start_ids[r->n_start++] = wanted[i];
	}
	listed = idmap_sorted_keys(&p->listed, &n_listed);
	if (p->listed.len > 0 && listed == NULL)
		goto oom;
	if (n_listed > 0) {
		r->stop_ids = malloc(n_listed * sizeof(int64_t));
		if (r->stop_ids == NULL)
			goto oom;
	}
	for (size_t i = 0; i < n_listed; i++)
		if (idmap_get(&want, listed[i]) == 0)
			r->stop_ids[r->n_stop++] = listed[i];
	free(listed);
	idmap_free(&want);
	r->rec.to_start = (uint32_t)r->n_start;
	r->rec.to_stop = (uint32_t)r->n_stop;
	if (p->active_runs > 0) {
		r->rec.overlapped = true;
		p->overlapping_runs++;
		for (struct run *o = p->active; o != NULL; o = o->next_active)
			o->rec.overlapped = true;
	}
	link_active(p, r);
	return r;
oom:
	free(listed);
	idmap_free(&want);
	model_run_free(r);
	return NULL;
}

static int64_t scaled(double scale, int64_t ms)
{
	double v = (double)ms * scale;

	return v <= 0 ? 0 : (int64_t)(v + 0.5);
}

int64_t model_run_step(struct node_proc *p, struct run *r, double scale)
{
	if (r->pos < r->n_start) {
		int64_t id = r->start_ids[r->pos++];

		/* monitorList[id] = new copy: an entry already there is overwritten, and that copy
		 * goes on checking from nowhere (started by an overlapping run). */
		if (idmap_get(&p->listed, id) != 0) {
			if (idmap_add(&p->leaked, id, 1)) {
				p->leaked_total++;
				r->rec.leaked++;
			}
		} else {
			(void)idmap_set(&p->listed, id, 1);
		}
		r->rec.started++;
		return scaled(scale, rng_between(&p->rng, START_SLEEP_MIN_MS, START_SLEEP_MAX_MS));
	}
	if (r->pos < r->n_start + r->n_stop) {
		int64_t id = r->stop_ids[r->pos++ - r->n_start];

		/* Stops the copy in the list, if any; a leaked copy is out of reach. */
		if (idmap_get(&p->listed, id) != 0)
			(void)idmap_set(&p->listed, id, 0);
		r->rec.stopped++;
		return scaled(scale, rng_between(&p->rng, STOP_SLEEP_MIN_MS, STOP_SLEEP_MAX_MS));
	}
	if (r->pos == r->n_start + r->n_stop) {
		r->pos++;
		return scaled(scale, RUN_OVERHEAD_MS);
	}
	return -1;
}

void model_run_end(struct node_proc *p, struct run *r, enum run_result result, int64_t now_ms)
{
	unlink_active(p, r);
	r->rec.result = (uint8_t)result;
	r->rec.end_ms = now_ms;
}

void model_run_free(struct run *r)
{
	if (r == NULL)
		return;
	free(r->start_ids);
	free(r->stop_ids);
	free(r);
}

/* ============================== cron ============================== */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t b)
{
	return a - floor_div(a, b) * b;
}

int64_t cron_minute(int64_t t, int64_t skew)
{
	return floor_div(t + skew, 60000);
}

bool cron_in_window(int64_t t, int64_t skew)
{
	return floor_mod(t + skew, 60000) < 1000;
}

/* The check inside minute k's :00 second: boundary B (real time the node clock reads :00),
 * then the first check at or after it. */
static int64_t fire_of_minute(int64_t k, int64_t skew, int phase)
{
	int64_t b = k * 60000 - skew;

	return b + floor_mod((int64_t)phase - b, 1000);
}

int64_t cron_next_fire(int64_t from, int64_t skew, int phase)
{
	int64_t k = cron_minute(from, skew);
	int64_t f = fire_of_minute(k, skew, phase);

	return f >= from ? f : fire_of_minute(k + 1, skew, phase);
}

/* ============================== rate limit ============================== */

struct rl_verdict rl_hit(struct ratelimit *rl, const void *addr, size_t len, int64_t now_ms)
{
	struct rl_verdict v = { true, 0, 0 };
	struct rl_client *c = NULL;

	if (rl->limit == 0)
		return v;
	if (len > sizeof(c->addr))
		len = sizeof(c->addr);
	for (size_t i = 0; i < rl->n; i++) {
		if (rl->c[i].len == len && memcmp(rl->c[i].addr, addr, len) == 0) {
			c = &rl->c[i];
			break;
		}
	}
	if (c == NULL) {
		/* Forget clients whose window is over before growing the table. */
		size_t w = 0;
		for (size_t i = 0; i < rl->n; i++)
			if (rl->c[i].reset_at > now_ms)
				rl->c[w++] = rl->c[i];
		rl->n = w;
		if (rl->n == rl->cap) {
			size_t ncap = rl->cap ? rl->cap * 2 : 4;
			struct rl_client *nc = realloc(rl->c, ncap * sizeof(*nc));
			if (nc == NULL)
				return v; /* out of memory: let it through rather than invent a 429 */
			rl->c = nc;
			rl->cap = ncap;
		}
		c = &rl->c[rl->n++];
		memset(c, 0, sizeof(*c));
		memcpy(c->addr, addr, len);
		c->len = (unsigned char)len;
		c->reset_at = now_ms + rl->window_ms;
	}
	if (c->reset_at <= now_ms) {
		c->hits = 0;
		c->reset_at = now_ms + rl->window_ms;
	}
	if (c->hits < UINT32_MAX)
		c->hits++;
	v.allowed = c->hits <= rl->limit;
	v.remaining = v.allowed ? rl->limit - c->hits : 0;
	v.reset_in_ms = c->reset_at - now_ms;
	if (!v.allowed)
		rl->limited++;
	return v;
}

void rl_reset(struct ratelimit *rl)
{
	rl->n = 0;
}

void rl_free(struct ratelimit *rl)
{
	free(rl->c);
	rl->c = NULL;
	rl->n = rl->cap = 0;
}

/* ============================== random delays ============================== */

uint64_t rng_next(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x2545F4914F6CDD1Dull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

int64_t rng_between(uint64_t *state, int64_t lo, int64_t hi)
{
	uint64_t span = (uint64_t)(hi - lo) + 1;

	return lo + (int64_t)(rng_next(state) % span);
}
