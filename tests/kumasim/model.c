/*
 * model.c — a Kuma node process as pure functions (see model.h for the behaviour modelled).
 *
 * Owns: the monitor list and leaked copies of a node process, the timeline of its copies, run
 * step logic, cron time arithmetic, the rate-limit table and the delay RNG.  Must not: sleep, lock, read clocks,
 * log, or do I/O; every time comes in as an argument.
 */
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* ============================== timeline ============================== */

const struct tl_event *tl_at(const struct timeline *tl, size_t i)
{
	return &tl->ev[(tl->head + i) % tl->cap];
}

static void tl_push(struct timeline *tl, int64_t id, uint32_t copy, enum tl_kind kind,
		    enum tl_cause cause, int64_t t_ms)
{
	struct tl_event e = { id, t_ms, copy, (uint8_t)kind, (uint8_t)cause };

	if (tl->max == 0)
		return;
	if (tl->len == tl->cap && tl->cap < tl->max) {
		/* Grow a ring that has not wrapped yet (head is 0 until it is full). */
		size_t ncap = tl->cap ? tl->cap * 2 : 64;
		struct tl_event *nv;

		if (ncap > tl->max)
			ncap = tl->max;
		nv = realloc(tl->ev, ncap * sizeof(*nv));
		if (nv != NULL) {
			tl->ev = nv;
			tl->cap = ncap;
		}
	}
	if (tl->cap == 0) {
		tl->dropped++;
		return;
	}
	if (tl->len < tl->cap) {
		tl->ev[(tl->head + tl->len) % tl->cap] = e;
		tl->len++;
	} else {
		tl->ev[tl->head] = e;
		tl->head = (tl->head + 1) % tl->cap;
		tl->dropped++;
	}
}

bool tl_set_max(struct timeline *tl, size_t max)
{
	size_t keep = tl->len < max ? tl->len : max;
	struct tl_event *nv = NULL;

	if (keep > 0) {
		nv = malloc(keep * sizeof(*nv));
		if (nv == NULL)
			return false;
		for (size_t i = 0; i < keep; i++)
			nv[i] = *tl_at(tl, tl->len - keep + i);
	}
	tl->dropped += tl->len - keep;
	free(tl->ev);
	tl->ev = nv;
	tl->cap = tl->len = keep;
	tl->head = 0;
	tl->max = max;
	return true;
}

void tl_clear(struct timeline *tl, int64_t now_ms)
{
	tl->len = tl->head = 0;
	tl->dropped = 0;
	tl->since_ms = now_ms;
}

void tl_free(struct timeline *tl)
{
	free(tl->ev);
	tl->ev = NULL;
	tl->cap = tl->len = tl->head = 0;
}

static uint32_t new_copy(struct node_proc *p)
{
	if (++p->next_copy == 0)
		p->next_copy = 1;
	return p->next_copy;
}

/* Index of copy c in out[0..*n), creating it; the map holds copy -> index + 1. */
static struct tl_copy *copy_entry(struct idmap *at, struct tl_copy *out, size_t *n, int64_t id,
				  uint32_t c, bool *oom)
{
	uint32_t k = idmap_get(at, c);

	if (k != 0)
		return &out[k - 1];
	if (!idmap_set(at, c, (uint32_t)(*n + 1))) {
		*oom = true;
		return NULL;
	}
	memset(&out[*n], 0, sizeof(out[*n]));
	out[*n].id = id;
	out[*n].copy = c;
	return &out[(*n)++];
}

static int cmp_copy(const void *a, const void *b)
{
	const struct tl_copy *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->copy < y->copy ? -1 : x->copy > y->copy;
}

struct tl_copy *tl_copies(const struct node_proc *p, int64_t only_id, size_t *n, bool *oom)
{
	size_t most = p->tl.len + p->listed.len + p->leaked_total, k = 0;
	struct tl_copy *out;
	struct idmap at = { 0 };

	*n = 0;
	*oom = false;
	if (most == 0)
		return NULL;
	out = malloc(most * sizeof(*out));
	if (out == NULL) {
		*oom = true;
		return NULL;
	}
	for (size_t i = 0; i < p->tl.len && !*oom; i++) {
		const struct tl_event *e = tl_at(&p->tl, i);
		struct tl_copy *c;

		if (only_id > 0 && e->id != only_id)
			continue;
		c = copy_entry(&at, out, &k, e->id, e->copy, oom);
		if (c == NULL)
			break;
		if (e->kind == TL_START) {
			c->start_ms = e->t_ms;
			c->started_by = e->cause;
		} else if (e->kind == TL_STOP) {
			c->stop_ms = e->t_ms;
			c->stopped_by = e->cause;
		} else {
			c->leaked_ms = e->t_ms;
		}
	}
	/* What runs now, whether or not the record saw it start. */
	for (size_t i = 0; i < p->listed.cap && !*oom; i++) {
		const struct idmap_slot *sl = &p->listed.slots[i];
		struct tl_copy *c;

		if (sl->key == 0 || (only_id > 0 && sl->key != only_id))
			continue;
		c = copy_entry(&at, out, &k, sl->key, sl->val, oom);
		if (c != NULL)
			c->running = c->listed = true;
	}
	for (size_t i = 0; i < p->leaked_total && !*oom; i++) {
		struct tl_copy *c;

		if (only_id > 0 && p->leaks[i].id != only_id)
			continue;
		c = copy_entry(&at, out, &k, p->leaks[i].id, p->leaks[i].copy, oom);
		if (c != NULL)
			c->running = true;
	}
	idmap_free(&at);
	if (*oom || k == 0) {
		free(out);
		return NULL;
	}
	qsort(out, k, sizeof(*out), cmp_copy);
	*n = k;
	return out;
}

/* ============================== monitor list ============================== */

uint32_t model_copies(const struct node_proc *p, int64_t id)
{
	return (idmap_get(&p->listed, id) != 0) + idmap_get(&p->leaked, id);
}

/* A new copy of id begins checking at now_ms and is stored in the list. */
static bool start_copy(struct node_proc *p, int64_t id, enum tl_cause cause, int64_t now_ms)
{
	uint32_t c = new_copy(p);

	if (!idmap_set(&p->listed, id, c))
		return false;
	tl_push(&p->tl, id, c, TL_START, cause, now_ms);
	return true;
}

bool model_populate(struct node_proc *p, const int64_t *wanted, size_t n, int64_t now_ms)
{
	for (size_t i = 0; i < n; i++)
		if (idmap_get(&p->listed, wanted[i]) == 0 &&
		    !start_copy(p, wanted[i], TL_BOOT, now_ms))
			return false;
	return true;
}

void model_clear(struct node_proc *p, int64_t now_ms)
{
	for (size_t i = 0; i < p->listed.cap; i++)
		if (p->listed.slots[i].key != 0)
			tl_push(&p->tl, p->listed.slots[i].key, p->listed.slots[i].val, TL_STOP,
				TL_RESTART, now_ms);
	for (size_t i = 0; i < p->leaked_total; i++)
		tl_push(&p->tl, p->leaks[i].id, p->leaks[i].copy, TL_STOP, TL_RESTART, now_ms);
	idmap_clear(&p->listed);
	idmap_clear(&p->leaked);
	p->leaked_total = 0;
}

void model_free(struct node_proc *p)
{
	idmap_free(&p->listed);
	idmap_free(&p->leaked);
	free(p->leaks);
	p->leaks = NULL;
	p->leaks_cap = 0;
	tl_free(&p->tl);
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

/* The listed copy of id is overwritten by a new one: the old copy goes on checking, in no list. */
static bool leak_copy(struct node_proc *p, int64_t id, int64_t now_ms)
{
	if (p->leaked_total == p->leaks_cap) {
		size_t ncap = p->leaks_cap ? p->leaks_cap * 2 : 16;
		struct leak_copy *nl = realloc(p->leaks, ncap * sizeof(*nl));

		if (nl == NULL)
			return false;
		p->leaks = nl;
		p->leaks_cap = ncap;
	}
	if (!idmap_add(&p->leaked, id, 1))
		return false;
	p->leaks[p->leaked_total].id = id;
	p->leaks[p->leaked_total].copy = idmap_get(&p->listed, id);
	p->leaked_total++;
	tl_push(&p->tl, id, p->leaks[p->leaked_total - 1].copy, TL_LEAK, TL_RUN, now_ms);
	return true;
}

int64_t model_run_step(struct node_proc *p, struct run *r, double scale, int64_t now_ms)
{
	if (r->pos < r->n_start) {
		int64_t id = r->start_ids[r->pos++];

		/* monitorList[id] = new copy: an entry already there is overwritten, and that copy
		 * goes on checking from nowhere (started by an overlapping run). */
		if (idmap_get(&p->listed, id) != 0 && leak_copy(p, id, now_ms))
			r->rec.leaked++;
		(void)start_copy(p, id, TL_RUN, now_ms);
		r->rec.started++;
		return scaled(scale, rng_between(&p->rng, START_SLEEP_MIN_MS, START_SLEEP_MAX_MS));
	}
	if (r->pos < r->n_start + r->n_stop) {
		int64_t id = r->stop_ids[r->pos++ - r->n_start];

		/* Stops the copy in the list, if any; a leaked copy is out of reach. */
		uint32_t c = idmap_get(&p->listed, id);

		if (c != 0) {
			(void)idmap_set(&p->listed, id, 0);
			tl_push(&p->tl, id, c, TL_STOP, TL_RUN, now_ms);
		}
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
