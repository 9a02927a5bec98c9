/*
 * engine.c — time and the database for kumasim's nodes: reconcile runs stepping through their
 * sleeps, each node's :00 cron on its own clock, and the database work that starts runs and
 * restarts.
 *
 * Owns: the engine thread and its timer heap of runs in progress, the cron schedule of every
 * node, run history, and the database jobs for calls, cron ticks and restarts.  Must not:
 * decide what a run does (model.c), touch HTTP beyond answering the request a run or job was
 * given (req_answer), or hold sim.model_lock while waiting for the database.
 *
 * One thread steps every node's runs, so a thousand nodes cost one thread.  Runs of one node
 * interleave exactly as a Node.js process interleaves two async reconciles: each step is
 * instantaneous, and the sleeps between steps are where another run (or the cron) gets in.
 *
 * Cron while stopped: node-cron checks the clock once a second and fires only when the check
 * itself falls in second :00 (missed executions are not recovered).  A SIGSTOPped process runs
 * no check, so a :00 that passes while it is stopped is skipped (cron_skipped counts it); on
 * SIGCONT the first check happens at once, and fires only if the node clock is inside :00 at
 * that moment.  Checks then continue one second apart from the moment it resumed.
 */
#include "sim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LATE_CHECK_MS 50   /* a cron check this late means the process did not run meanwhile */
#define IDLE_WAKE_MS 1000  /* re-read the wall clock at least this often (clock steps) */

static const char UNAUTHORIZED[] = "{\"ok\":false,\"msg\":\"API key authentication failed\"}";

/* ============================== timer heap ============================== */

static void heap_swap(struct sim *s, size_t a, size_t b)
{
	struct run *t = s->heap[a];

	s->heap[a] = s->heap[b];
	s->heap[b] = t;
	s->heap[a]->heap_idx = a;
	s->heap[b]->heap_idx = b;
}

static void sift_up(struct sim *s, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (s->heap[p]->due_mono_ms <= s->heap[i]->due_mono_ms)
			break;
		heap_swap(s, p, i);
		i = p;
	}
}

static void sift_down(struct sim *s, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < s->heap_len && s->heap[l]->due_mono_ms < s->heap[m]->due_mono_ms)
			m = l;
		if (r < s->heap_len && s->heap[r]->due_mono_ms < s->heap[m]->due_mono_ms)
			m = r;
		if (m == i)
			return;
		heap_swap(s, i, m);
		i = m;
	}
}

static bool heap_push(struct sim *s, struct run *r)
{
	if (s->heap_len == s->heap_cap) {
		size_t ncap = s->heap_cap ? s->heap_cap * 2 : 64;
		struct run **nh = realloc(s->heap, ncap * sizeof(*nh));
		if (nh == NULL)
			return false;
		s->heap = nh;
		s->heap_cap = ncap;
	}
	r->heap_idx = s->heap_len;
	s->heap[s->heap_len++] = r;
	sift_up(s, r->heap_idx);
	return true;
}

static void heap_remove(struct sim *s, struct run *r)
{
	size_t i = r->heap_idx;

	if (i >= s->heap_len || s->heap[i] != r)
		return;
	s->heap_len--;
	if (i != s->heap_len) {
		s->heap[i] = s->heap[s->heap_len];
		s->heap[i]->heap_idx = i;
		sift_down(s, i);
		sift_up(s, i);
	}
}

/* ============================== history ============================== */

void engine_record_locked(struct node *n, const struct run_rec *rec)
{
	if (n->hist_len == n->hist_cap && n->hist_cap < RUN_HISTORY_MAX) {
		/* Grow a ring that has not wrapped yet (hist_head is 0 until it is full). */
		size_t ncap = n->hist_cap ? n->hist_cap * 2 : 8;
		struct run_rec *nh;
		if (ncap > RUN_HISTORY_MAX)
			ncap = RUN_HISTORY_MAX;
		nh = realloc(n->hist, ncap * sizeof(*nh));
		if (nh != NULL) {
			n->hist = nh;
			n->hist_cap = ncap;
		}
	}
	if (n->hist_cap == 0)
		return;
	if (n->hist_len < n->hist_cap) {
		n->hist[(n->hist_head + n->hist_len) % n->hist_cap] = *rec;
		n->hist_len++;
	} else {
		n->hist[n->hist_head] = *rec;
		n->hist_head = (n->hist_head + 1) % n->hist_cap;
	}
}

/* A run that never began because its database read failed. */
static void record_failure(struct sim *s, struct node *n, enum run_trigger trigger,
			   const char *err)
{
	struct run_rec rec;

	memset(&rec, 0, sizeof(rec));
	pthread_mutex_lock(&s->model_lock);
	rec.id = ++s->next_run_id;
	rec.trigger = (uint8_t)trigger;
	rec.result = RUN_DB_ERROR;
	rec.start_ms = rec.end_ms = real_ms();
	snprintf(rec.error, sizeof(rec.error), "%s", err != NULL ? err : "database error");
	n->runs_failed++;
	engine_record_locked(n, &rec);
	pthread_mutex_unlock(&s->model_lock);
}

/* ============================== runs ============================== */

/* model_lock held.  Answers the waiting call (after the whole run, or never if aborted). */
static void finish_run_locked(struct sim *s, struct run *r, enum run_result result)
{
	struct node *n = r->owner;

	model_run_end(&n->proc, r, result, real_ms());
	engine_record_locked(n, &r->rec);
	if (r->waiter != NULL)
		req_answer(s, r->waiter, result == RUN_OK ? 200 : 0, "{\"ok\":true}");
	model_run_free(r);
}

/* A run begins with the wanted set just read.  waiter (or NULL for the cron) carries one
 * reference that the run's end gives back. */
static void start_run(struct sim *s, struct node *n, enum run_trigger trigger,
		      const struct id_vec *wanted, struct req *waiter, uint64_t epoch)
{
	struct run *r = NULL;

	pthread_mutex_lock(&s->model_lock);
	if (s->engine_stop || n->epoch != epoch) {
		/* The process this work belonged to is gone (restart or shutdown). */
		pthread_mutex_unlock(&s->model_lock);
		if (waiter != NULL)
			req_answer(s, waiter, 0, NULL);
		return;
	}
	r = model_run_begin(&n->proc, trigger, wanted->v, wanted->n, real_ms(), ++s->next_run_id);
	if (r != NULL) {
		r->owner = n;
		r->waiter = waiter;
		r->due_mono_ms = mono_ms();
		if (!heap_push(s, r)) {
			r->waiter = NULL;
			model_run_end(&n->proc, r, RUN_ABORTED, real_ms());
			model_run_free(r);
			r = NULL;
		}
	}
	if (r != NULL) {
		if (trigger == TRIGGER_CALL)
			n->runs_call++;
		else
			n->runs_cron++;
		pthread_cond_signal(&s->engine_cond);
	}
	pthread_mutex_unlock(&s->model_lock);
	if (r == NULL && waiter != NULL)
		req_answer(s, waiter, 500, "{\"ok\":false,\"msg\":\"kumasim: out of memory\"}");
}

/* Aborts every run of n (its process is going away); model_lock held. */
static void abort_runs_locked(struct sim *s, struct node *n)
{
	while (n->proc.active != NULL) {
		struct run *r = n->proc.active;
		heap_remove(s, r);
		finish_run_locked(s, r, RUN_ABORTED);
	}
}

/* ============================== cron ============================== */

static void recompute_cron_min_locked(struct sim *s)
{
	int64_t m = INT64_MAX;

	if (s->opt.cron)
		for (size_t i = 0; i < s->n_nodes; i++)
			if (s->nodes[i].next_fire < m)
				m = s->nodes[i].next_fire;
	s->cron_min_fire = m;
}

void engine_reschedule_cron_locked(struct sim *s, struct node *n, int64_t now_real)
{
	n->next_fire = cron_next_fire(now_real, n->skew_ms, n->cron_phase);
	recompute_cron_min_locked(s);
}

void engine_wake_locked(struct sim *s)
{
	pthread_cond_signal(&s->engine_cond);
}

/*
 * The check due at n->next_fire happens now, at w (late if the process was stopped).  It fires
 * when w lies in second :00 of the node clock; every :00 between the due check and w that had
 * no check is skipped.  Returns whether it fires.
 */
static bool cron_check_locked(struct node *n, int64_t w)
{
	int64_t due = n->next_fire;
	int64_t m_due = cron_minute(due, n->skew_ms), m_w = cron_minute(w, n->skew_ms);
	bool fires = cron_in_window(w, n->skew_ms);

	if (w - due > LATE_CHECK_MS)
		n->cron_phase = (int)(((w % 1000) + 1000) % 1000); /* checks resume from now */
	n->cron_skipped += (uint64_t)(m_w - m_due) + (fires ? 0 : 1);
	n->next_fire = cron_next_fire((m_w + 1) * 60000 - n->skew_ms, n->skew_ms, n->cron_phase);
	return fires;
}

struct cron_job {
	struct db_job job;
	struct sim *s;
	size_t k;
	struct node **nodes;
	uint64_t *epochs;
};

static void free_cron_job(struct cron_job *cj)
{
	free(cj->nodes);
	free(cj->epochs);
	free(cj);
}

/* ============================== reading assignments ============================== */

static struct node *node_by_id(struct sim *s, const char *id)
{
	size_t lo = 0, hi = s->n_nodes;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(s->by_id[mid]->id, id);
		if (c == 0)
			return s->by_id[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct many_ctx {
	struct sim *s;
	int *slot;               /* node index -> position in out[], -1 = not asked */
	struct id_vec *out;
	bool oom;
};

static void collect_one(void *arg, const char *node, int64_t id)
{
	struct many_ctx *m = arg;
	struct node *n = node_by_id(m->s, node);

	if (n != NULL && m->slot[n->index] >= 0 && !id_vec_push(&m->out[m->slot[n->index]], id))
		m->oom = true;
}

/* The wanted set of each of k nodes: the node's own query for one node, one scan of the
 * monitor table for several (the same answer, read at the same moment). */
static int read_wanted(struct sim *s, struct db_conn *c, struct node *const *nodes, size_t k,
		       struct id_vec *out, char *err, size_t errlen)
{
	struct many_ctx m = { s, NULL, out, false };
	int rc;

	if (k == 1)
		return db_wanted(c, nodes[0]->id, &out[0], err, errlen);
	m.slot = malloc(s->n_nodes * sizeof(int));
	if (m.slot == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < s->n_nodes; i++)
		m.slot[i] = -1;
	for (size_t i = 0; i < k; i++)
		m.slot[nodes[i]->index] = (int)i;
	rc = db_wanted_all(c, collect_one, &m, err, errlen);
	free(m.slot);
	if (rc == 0 && m.oom) {
		snprintf(err, errlen, "out of memory");
		rc = -1;
	}
	for (size_t i = 0; rc == 0 && i < k; i++)
		id_vec_sort(&out[i]);
	return rc;
}

static void cron_job_run(struct db_conn *c, const char *open_err, struct db_job *j,
			 bool shutting_down)
{
	struct cron_job *cj = (struct cron_job *)j;
	struct sim *s = cj->s;
	struct id_vec *vecs = NULL;
	char err[256];
	int rc = -1;

	if (shutting_down) {
		free_cron_job(cj);
		return;
	}
	if (c == NULL) {
		snprintf(err, sizeof(err), "%s", open_err);
	} else {
		vecs = calloc(cj->k, sizeof(*vecs));
		if (vecs == NULL)
			snprintf(err, sizeof(err), "out of memory");
		else
			rc = read_wanted(s, c, cj->nodes, cj->k, vecs, err, sizeof(err));
	}
	for (size_t i = 0; i < cj->k; i++) {
		if (rc == 0)
			start_run(s, cj->nodes[i], TRIGGER_CRON, &vecs[i], NULL, cj->epochs[i]);
		else
			record_failure(s, cj->nodes[i], TRIGGER_CRON, err);
		if (vecs != NULL)
			id_vec_free(&vecs[i]);
	}
	free(vecs);
	free_cron_job(cj);
}

/* model_lock held: runs every check that is due and returns a job for the nodes that fire
 * (NULL when none does), to be submitted once the lock is released. */
static struct cron_job *cron_due_locked(struct sim *s, int64_t now_real)
{
	struct cron_job *cj = NULL;

	if (!s->opt.cron || now_real < s->cron_min_fire)
		return NULL;
	for (size_t i = 0; i < s->n_nodes; i++) {
		struct node *n = &s->nodes[i];

		if (n->next_fire > now_real || !cron_check_locked(n, now_real))
			continue;
		if (cj == NULL) {
			cj = calloc(1, sizeof(*cj));
			if (cj != NULL) {
				cj->nodes = malloc(s->n_nodes * sizeof(*cj->nodes));
				cj->epochs = malloc(s->n_nodes * sizeof(*cj->epochs));
				if (cj->nodes == NULL || cj->epochs == NULL) {
					free_cron_job(cj);
					cj = NULL;
				}
			}
			if (cj == NULL)
				continue; /* out of memory: this tick is lost, as a crashed check would be */
			cj->job.run = cron_job_run;
			cj->s = s;
		}
		cj->nodes[cj->k] = n;
		cj->epochs[cj->k] = n->epoch;
		cj->k++;
	}
	recompute_cron_min_locked(s);
	return cj;
}

/* ============================== the engine thread ============================== */

static void *engine_main(void *arg)
{
	struct sim *s = arg;

	pthread_mutex_lock(&s->model_lock);
	while (!s->engine_stop) {
		int64_t now = mono_ms(), now_real = real_ms(), wait_ms = IDLE_WAKE_MS;
		struct cron_job *cj;

		while (s->heap_len > 0 && s->heap[0]->due_mono_ms <= now) {
			struct run *r = s->heap[0];
			struct node *n = r->owner;
			int64_t d = model_run_step(&n->proc, r, s->opt.delay_scale, real_ms());

			if (d < 0) {
				heap_remove(s, r);
				finish_run_locked(s, r, RUN_OK);
			} else {
				r->due_mono_ms = now + d;
				sift_down(s, 0);
			}
		}
		cj = cron_due_locked(s, now_real);
		if (cj != NULL) {
			pthread_mutex_unlock(&s->model_lock);
			db_pool_submit(s->pool, &cj->job);
			pthread_mutex_lock(&s->model_lock);
			continue;
		}
		if (s->heap_len > 0 && s->heap[0]->due_mono_ms - now < wait_ms)
			wait_ms = s->heap[0]->due_mono_ms - now;
		if (s->opt.cron && s->cron_min_fire - now_real < wait_ms)
			wait_ms = s->cron_min_fire - now_real;
		if (wait_ms > 0) {
			int64_t until = now + wait_ms;
			struct timespec ts = { .tv_sec = until / 1000,
					       .tv_nsec = (long)(until % 1000) * 1000000L };
			pthread_cond_timedwait(&s->engine_cond, &s->model_lock, &ts);
		}
	}
	pthread_mutex_unlock(&s->model_lock);
	return NULL;
}

bool engine_start(struct sim *s)
{
	pthread_condattr_t ca;
	bool ok;

	if (pthread_condattr_init(&ca) != 0)
		return false;
	ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
	     pthread_cond_init(&s->engine_cond, &ca) == 0;
	pthread_condattr_destroy(&ca);
	if (!ok)
		return false;
	pthread_mutex_lock(&s->model_lock);
	recompute_cron_min_locked(s);
	pthread_mutex_unlock(&s->model_lock);
	if (pthread_create(&s->engine_thread, NULL, engine_main, s) != 0) {
		pthread_cond_destroy(&s->engine_cond);
		return false;
	}
	s->engine_running = true;
	return true;
}

void engine_stop(struct sim *s)
{
	if (!s->engine_running)
		return;
	pthread_mutex_lock(&s->model_lock);
	s->engine_stop = true;
	pthread_cond_signal(&s->engine_cond);
	pthread_mutex_unlock(&s->model_lock);
	pthread_join(s->engine_thread, NULL);
	s->engine_running = false;
	pthread_mutex_lock(&s->model_lock);
	for (size_t i = 0; i < s->n_nodes; i++)
		abort_runs_locked(s, &s->nodes[i]);
	pthread_mutex_unlock(&s->model_lock);
	pthread_cond_destroy(&s->engine_cond);
}

void engine_free(struct sim *s)
{
	for (size_t i = 0; i < s->n_nodes; i++) {
		model_free(&s->nodes[i].proc);
		rl_free(&s->nodes[i].rl);
		free(s->nodes[i].hist);
		s->nodes[i].hist = NULL;
	}
	free(s->heap);
	s->heap = NULL;
	s->heap_len = s->heap_cap = 0;
}

/* ============================== a reconcile call ============================== */

struct call_job {
	struct db_job job;
	struct sim *s;
	struct node *n;
	struct req *rq;
	uint64_t epoch;
};

static void fail_call(struct sim *s, struct node *n, struct req *rq, const char *err)
{
	char safe[200], body[ANSWER_MAX];

	json_safe(safe, sizeof(safe), err);
	snprintf(body, sizeof(body), "{\"ok\":false,\"msg\":\"%s\"}", safe);
	atomic_fetch_add(&n->reconcile_errors, 1);
	record_failure(s, n, TRIGGER_CALL, err);
	req_answer(s, rq, 500, body);
}

static void call_job_run(struct db_conn *c, const char *open_err, struct db_job *j,
			 bool shutting_down)
{
	struct call_job *cj = (struct call_job *)j;
	struct sim *s = cj->s;
	struct node *n = cj->n;
	struct id_vec wanted = { 0 };
	char err[256];
	bool user_ok = false;

	if (shutting_down) {
		req_answer(s, cj->rq, 0, NULL);
	} else if (c == NULL) {
		fail_call(s, n, cj->rq, open_err);
	} else if (db_user_ok(c, &user_ok, err, sizeof(err)) != 0) {
		fail_call(s, n, cj->rq, err);
	} else if (!user_ok) {
		/* Before first-run setup (or with user 1 disabled) no API key works. */
		atomic_fetch_add(&n->reconcile_unauthorized, 1);
		req_answer(s, cj->rq, 401, UNAUTHORIZED);
	} else if (db_wanted(c, n->id, &wanted, err, sizeof(err)) != 0) {
		fail_call(s, n, cj->rq, err);
	} else {
		atomic_fetch_add(&n->reconcile_calls, 1);
		atomic_store(&n->last_reconcile_ms, cj->rq->arrival_real_ms);
		start_run(s, n, TRIGGER_CALL, &wanted, cj->rq, cj->epoch);
	}
	id_vec_free(&wanted);
	free(cj);
}

void engine_submit_call(struct sim *s, struct node *n, struct req *rq)
{
	struct call_job *cj = calloc(1, sizeof(*cj));

	if (cj == NULL) {
		req_answer(s, rq, 0, NULL);
		return;
	}
	cj->job.run = call_job_run;
	cj->s = s;
	cj->n = n;
	cj->rq = rq;
	pthread_mutex_lock(&s->model_lock);
	cj->epoch = n->epoch;
	pthread_mutex_unlock(&s->model_lock);
	db_pool_submit(s->pool, &cj->job);
}

/* ============================== start-up and restart ============================== */

static void node_reg_of(const struct node *n, struct node_reg *reg)
{
	reg->id = n->id;
	reg->name = n->name;
	reg->host = n->host;
	reg->primary = n->primary;
}

/* The cron of a freshly started process: node-cron's check loop starts now. */
static void start_cron_locked(struct sim *s, struct node *n, int64_t now_real)
{
	n->cron_phase = s->opt.cron_phase >= 0 ? s->opt.cron_phase : (int)(now_real % 1000);
	n->next_fire = cron_next_fire(now_real, n->skew_ms, n->cron_phase);
}

bool engine_boot(struct sim *s, char *err, size_t errlen)
{
	struct db_conn *c = db_open(&s->opt.db, err, errlen);
	struct node_reg *regs = NULL;
	struct node **all = NULL;
	struct id_vec *vecs = NULL;
	bool ok = false;
	int64_t now;

	if (c == NULL)
		return false;
	regs = calloc(s->n_nodes, sizeof(*regs));
	all = calloc(s->n_nodes, sizeof(*all));
	vecs = calloc(s->n_nodes, sizeof(*vecs));
	if (regs == NULL || all == NULL || vecs == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < s->n_nodes; i++) {
		node_reg_of(&s->nodes[i], &regs[i]);
		all[i] = &s->nodes[i];
	}
	if (db_prepare(c, s->opt.setup_done, err, errlen) != 0 ||
	    db_register_nodes(c, regs, s->n_nodes, err, errlen) != 0 ||
	    read_wanted(s, c, all, s->n_nodes, vecs, err, errlen) != 0)
		goto out;
	now = real_ms();
	pthread_mutex_lock(&s->model_lock);
	ok = true;
	for (size_t i = 0; i < s->n_nodes && ok; i++) {
		ok = model_populate(&s->nodes[i].proc, vecs[i].v, vecs[i].n, now);
		start_cron_locked(s, &s->nodes[i], now);
	}
	pthread_mutex_unlock(&s->model_lock);
	if (!ok)
		snprintf(err, errlen, "out of memory");
out:
	for (size_t i = 0; vecs != NULL && i < s->n_nodes; i++)
		id_vec_free(&vecs[i]);
	free(vecs);
	free(all);
	free(regs);
	db_close(c);
	return ok;
}

struct restart_job {
	struct db_job job;
	struct sim *s;
	struct node *n;
	struct req *rq;
};

static void restart_job_run(struct db_conn *c, const char *open_err, struct db_job *j,
			    bool shutting_down)
{
	struct restart_job *rj = (struct restart_job *)j;
	struct sim *s = rj->s;
	struct node *n = rj->n;
	struct node_reg reg;
	struct id_vec wanted = { 0 };
	char err[256], body[ANSWER_MAX], safe[200];
	uint64_t epoch;
	bool ok = false;

	if (shutting_down) {
		req_answer(s, rj->rq, 0, NULL);
		free(rj);
		return;
	}
	/* The old process dies: its runs end unanswered, its memory is gone. */
	pthread_mutex_lock(&s->model_lock);
	n->epoch++;
	epoch = n->epoch;
	abort_runs_locked(s, n);
	model_clear(&n->proc, real_ms());
	rl_reset(&n->rl);
	atomic_store(&n->start_real_ms, real_ms());
	start_cron_locked(s, n, real_ms());
	recompute_cron_min_locked(s);
	engine_wake_locked(s);
	pthread_mutex_unlock(&s->model_lock);
	atomic_fetch_add(&n->restarts, 1);

	/* The new one registers and starts what it is assigned. */
	node_reg_of(n, &reg);
	if (c == NULL)
		snprintf(err, sizeof(err), "%s", open_err);
	else if (db_register_nodes(c, &reg, 1, err, sizeof(err)) == 0 &&
		 db_wanted(c, n->id, &wanted, err, sizeof(err)) == 0)
		ok = true;
	if (ok) {
		pthread_mutex_lock(&s->model_lock);
		if (n->epoch == epoch &&
		    !model_populate(&n->proc, wanted.v, wanted.n, real_ms())) {
			ok = false;
			snprintf(err, sizeof(err), "out of memory");
		}
		pthread_mutex_unlock(&s->model_lock);
	}
	if (ok) {
		snprintf(body, sizeof(body), "{\"ok\":true,\"nodeId\":\"%s\",\"monitors\":%zu}", n->id,
			 wanted.n);
		req_answer(s, rj->rq, 200, body);
	} else {
		json_safe(safe, sizeof(safe), err);
		snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"%s\"}", safe);
		req_answer(s, rj->rq, 500, body);
	}
	id_vec_free(&wanted);
	free(rj);
}

void engine_submit_restart(struct sim *s, struct node *n, struct req *rq)
{
	struct restart_job *rj = calloc(1, sizeof(*rj));

	if (rj == NULL) {
		req_answer(s, rq, 0, NULL);
		return;
	}
	rj->job.run = restart_job_run;
	rj->s = s;
	rj->n = n;
	rj->rq = rq;
	db_pool_submit(s->pool, &rj->job);
}
