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
 *
 * The timeline (struct timeline) is the observer's record, not the process's memory: every
 * copy gets a number when it starts, and each start, stop and leak (the copy dropped out of
 * the list but goes on checking) is an event with its real-clock time, in a bounded ring.  A
 * restart ends every copy, leaked ones too, and says so in the record; the record itself
 * survives the restart.
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

/* ---- timeline ---- */

enum tl_kind { TL_START, TL_STOP, TL_LEAK };
enum tl_cause { TL_RUN, TL_BOOT, TL_RESTART };

struct tl_event {
	int64_t id;           /* monitor */
	int64_t t_ms;         /* real-clock epoch ms */
	uint32_t copy;        /* the copy's number on this node, from 1 */
	uint8_t kind;         /* enum tl_kind */
	uint8_t cause;        /* enum tl_cause: a run, the process start, a restart */
};

/* The last `max` events, oldest first from `head`; the array grows on demand up to max, so an
 * idle node costs nothing. */
struct timeline {
	struct tl_event *ev;
	size_t cap, len, head;
	size_t max;           /* 0 = no record */
	uint64_t dropped;     /* events pushed out (or lost to memory) since since_ms */
	int64_t since_ms;     /* the record begins here: process start or the last clear */
};

/* A leaked copy: still checking, in no list. */
struct leak_copy {
	int64_t id;
	uint32_t copy;
};

/* One copy as the timeline reports it (times 0 = not in the record). */
struct tl_copy {
	int64_t id;
	uint32_t copy;
	uint8_t started_by, stopped_by;   /* enum tl_cause */
	bool running;
	bool listed;          /* running and in the node's list (not leaked) */
	int64_t start_ms;     /* 0: began before the record (or its event was pushed out) */
	int64_t stop_ms;      /* 0: still running */
	int64_t leaked_ms;    /* when it dropped out of the list, 0 = never (or not in record) */
};

/* The state a node process keeps in memory, which a restart throws away (except `tl` and
 * `next_copy`, the observer's). */
struct node_proc {
	struct idmap listed;         /* monitorList: id -> number of the copy listed */
	struct idmap leaked;         /* id -> copies still checking but in no list */
	uint64_t leaked_total;
	struct leak_copy *leaks;     /* the leaked copies one by one (leaked_total of them) */
	size_t leaks_cap;
	uint32_t next_copy;          /* last copy number given */
	struct timeline tl;
	struct run *active;          /* runs in progress, newest first */
	unsigned active_runs;
	unsigned active_cron_runs;
	uint64_t overlapping_runs;   /* runs that began while another was in progress */
	uint64_t rng;                /* xorshift state, seeded per node */
};

/* ---- monitor list ---- */

uint32_t model_copies(const struct node_proc *p, int64_t id);
/* Process start at now_ms: every wanted monitor is put in the list at once, as startMonitors()
 * does. */
bool model_populate(struct node_proc *p, const int64_t *wanted, size_t n, int64_t now_ms);
/* Process restart at now_ms: every copy stops, leaked ones too; nothing runs (in-flight runs
 * are the caller's).  The timeline is kept. */
void model_clear(struct node_proc *p, int64_t now_ms);
void model_free(struct node_proc *p);

/* ---- runs ---- */

/* Begins a run with the wanted set just read (sorted, duplicates allowed); computes "running"
 * now.  Returns NULL when memory ran out.  The run is linked into p->active. */
struct run *model_run_begin(struct node_proc *p, enum run_trigger trigger, const int64_t *wanted,
			    size_t n_wanted, int64_t now_ms, uint64_t run_id);
/* Performs the run's next step at real time now_ms and returns how long to sleep before the
 * following one (already multiplied by scale), or -1 when the run is complete and should
 * answer. */
int64_t model_run_step(struct node_proc *p, struct run *r, double scale, int64_t now_ms);
/* Unlinks a finished or aborted run from p->active and records how it ended. */
void model_run_end(struct node_proc *p, struct run *r, enum run_result result, int64_t now_ms);
void model_run_free(struct run *r);

/* ---- timeline ---- */

/* Sets how many events are kept (0 = none); the newest are kept when it shrinks.  False only
 * when memory ran out (the record is then unchanged). */
bool tl_set_max(struct timeline *tl, size_t max);
/* Forgets every event; the record begins again at now_ms. */
void tl_clear(struct timeline *tl, int64_t now_ms);
void tl_free(struct timeline *tl);
/* The i-th oldest event kept (i < tl->len). */
const struct tl_event *tl_at(const struct timeline *tl, size_t i);
/*
 * Every copy the record knows of, or that runs now: one entry per copy, sorted by monitor id
 * then copy number, in a new array (*n entries; NULL with *n = 0 when there are none or
 * memory ran out, *oom says which).  only_id > 0 keeps that monitor's copies.
 */
struct tl_copy *tl_copies(const struct node_proc *p, int64_t only_id, size_t *n, bool *oom);

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
