/*
 * model.h — the behaviour of one cluster-aware Uptime Kuma node process, as pure functions
 * over plain data: its list of running monitors, the copies it leaked, reconcile runs step by
 * step, the :00 cron's timing, and the per-client rate limit.
 *
 * Nothing here sleeps, locks, reads a clock or touches a socket or a database: the engine
 * (engine.c) calls these with the time and the database's answer, under the model lock.
 *
 * How a real node reconciles, and so how this model does (facts in tests/kumasim/README.md):
 *   1. read the wanted set (SELECT id FROM monitor WHERE active = 1 AND
 *      COALESCE(assigned_node, node_id) = <me>), and compute "running" ONCE, from its
 *      monitorList, at the start of the run;
 *   2. start each wanted monitor that was not running, then sleep 100-300 ms;
 *   3. stop each running monitor that is not wanted, then sleep 50-150 ms;
 *   4. answer.
 * Starting a monitor creates a new check loop and stores it as monitorList[id], overwriting
 * any entry already there.  When two runs overlap, both may start the same id: the copy the
 * first one stored is overwritten, keeps checking, and is in no list any more, so no later
 * stop reaches it.  That is the leak (struct node_proc.leaked); only a restart ends it.
 */
#ifndef KUMASIM_MODEL_H
#define KUMASIM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idmap.h"

enum run_trigger { TRIGGER_CALL, TRIGGER_CRON };
enum run_result { RUN_RUNNING, RUN_OK, RUN_DB_ERROR, RUN_ABORTED };

/* Delays of a real node, in milliseconds (KUMA-NODE facts: 10 starts 2.0-2.4 s, 10 stops
 * 0.8-1.1 s, nothing to do 0.03 s). */
#define START_SLEEP_MIN_MS 100
#define START_SLEEP_MAX_MS 300
#define STOP_SLEEP_MIN_MS 50
#define STOP_SLEEP_MAX_MS 150
#define RUN_OVERHEAD_MS 25   /* the rest of a run that has nothing to do */

/* What /_sim/runs reports about one run; kept after the run ends. */
struct run_rec {
	uint64_t id;
	uint8_t trigger;      /* enum run_trigger */
	uint8_t result;       /* enum run_result */
	bool overlapped;      /* another run of the same node was in progress during this one */
	int64_t start_ms;     /* realtime ms the run began (after its database read) */
	int64_t end_ms;       /* realtime ms it answered; 0 while running */
	uint32_t wanted, to_start, to_stop, started, stopped, leaked;
	char error[96];       /* database error of a failed run */
};

struct run {
	struct run_rec rec;
	int64_t *start_ids;   /* wanted but not running at the start, ascending */
	size_t n_start;
	int64_t *stop_ids;    /* running at the start but not wanted, ascending */
	size_t n_stop;
	size_t pos;           /* next step: starts, then stops, then the closing overhead */
	struct run *next_active, *prev_active;
	/* the engine's bookkeeping */
	void *owner;          /* the node */
	void *waiter;         /* the HTTP request waiting for the answer, or NULL (cron) */
	size_t heap_idx;
	int64_t due_mono_ms;
};

/* The state a node process keeps in memory, which a restart throws away. */
struct node_proc {
	struct idmap listed;         /* monitorList: id -> 1 */
	struct idmap leaked;         /* id -> copies still checking but in no list */
	uint64_t leaked_total;
	struct run *active;          /* runs in progress, newest first */
	unsigned active_runs;
	unsigned active_cron_runs;
	uint64_t overlapping_runs;   /* runs that began while another was in progress */
	uint64_t rng;                /* xorshift state, seeded per node */
};

/* ---- monitor list ---- */

uint32_t model_copies(const struct node_proc *p, int64_t id);
/* Process start: every wanted monitor is put in the list at once, as startMonitors() does. */
bool model_populate(struct node_proc *p, const int64_t *wanted, size_t n);
/* Process restart: no monitor runs, nothing leaked (in-flight runs are the caller's). */
void model_clear(struct node_proc *p);
void model_free(struct node_proc *p);

/* ---- runs ---- */

/* Begins a run with the wanted set just read (sorted, duplicates allowed); computes "running"
 * now.  Returns NULL when memory ran out.  The run is linked into p->active. */
struct run *model_run_begin(struct node_proc *p, enum run_trigger trigger, const int64_t *wanted,
			    size_t n_wanted, int64_t now_ms, uint64_t run_id);
/* Performs the run's next step and returns how long to sleep before the following one
 * (already multiplied by scale), or -1 when the run is complete and should answer. */
int64_t model_run_step(struct node_proc *p, struct run *r, double scale);
/* Unlinks a finished or aborted run from p->active and records how it ended. */
void model_run_end(struct node_proc *p, struct run *r, enum run_result result, int64_t now_ms);
void model_run_free(struct run *r);

/* ---- cron ---- */

/*
 * node-cron checks the clock once a second, at real times congruent to `phase` modulo 1000,
 * and fires at the first check whose node-clock time (real + skew) lies in second :00 of a
 * minute.  Returns the real time of the first such check at or after `from`.
 */
int64_t cron_next_fire(int64_t from, int64_t skew, int phase);
/* True when real time t lies in second :00 of a minute of the node clock. */
bool cron_in_window(int64_t t, int64_t skew);
/* Minute number of real time t on the node clock. */
int64_t cron_minute(int64_t t, int64_t skew);

/* ---- rate limit ---- */

/* express-rate-limit's memory store: one window per client, opened by its first request and
 * lasting window_ms; every request counts, those over the limit too. */
struct rl_client {
	unsigned char addr[16];
	unsigned char len;
	uint32_t hits;
	int64_t reset_at;
};

struct ratelimit {
	struct rl_client *c;
	size_t n, cap;
	uint32_t limit;        /* 0 = no limit */
	int64_t window_ms;
	uint64_t limited;      /* requests answered 429 */
};

struct rl_verdict {
	bool allowed;
	uint32_t remaining;
	int64_t reset_in_ms;
};

struct rl_verdict rl_hit(struct ratelimit *rl, const void *addr, size_t len, int64_t now_ms);
void rl_reset(struct ratelimit *rl);
void rl_free(struct ratelimit *rl);

/* ---- random delays ---- */

uint64_t rng_next(uint64_t *state);
/* Uniform in [lo, hi]. */
int64_t rng_between(uint64_t *state, int64_t lo, int64_t hi);

#endif
