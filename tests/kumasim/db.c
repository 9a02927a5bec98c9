/*
 * db.c — the backend-independent part of kumasim's database access (see db.h): dispatch to
 * the SQLite or MariaDB backend, id vectors, and the worker pool.
 *
 * Owns: the job queue and the worker threads with their connections.  Must not: know what a
 * job means (jobs carry their own function), or touch HTTP or the model.
 */
#include "db.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ============================== id vectors ============================== */

bool id_vec_push(struct id_vec *iv, int64_t id)
{
	if (iv->n == iv->cap) {
		size_t ncap = iv->cap ? iv->cap * 2 : 64;
		int64_t *nv = realloc(iv->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return false;
		iv->v = nv;
		iv->cap = ncap;
	}
	iv->v[iv->n++] = id;
	return true;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

void id_vec_sort(struct id_vec *iv)
{
	if (iv->n > 1)
		qsort(iv->v, iv->n, sizeof(*iv->v), cmp_i64);
}

void id_vec_free(struct id_vec *iv)
{
	free(iv->v);
	iv->v = NULL;
	iv->n = iv->cap = 0;
}

/* ============================== dispatch ============================== */

struct db_conn {
	const struct db_ops *ops;
	void *impl;
	bool failed;
};

static int noted(struct db_conn *c, int rc)
{
	if (rc != 0)
		c->failed = true;
	return rc;
}

bool db_conn_failed(const struct db_conn *c)
{
	return c->failed;
}

struct db_conn *db_open(const struct db_cfg *cfg, char *err, size_t errlen)
{
	const struct db_ops *ops = cfg->kind == DB_SQLITE ? &db_sqlite_ops :
				   cfg->kind == DB_MARIADB ? &db_mariadb_ops : NULL;
	struct db_conn *c;

	if (ops == NULL) {
		snprintf(err, errlen, "no database configured");
		return NULL;
	}
	c = malloc(sizeof(*c));
	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->ops = ops;
	c->failed = false;
	c->impl = ops->open(cfg, err, errlen);
	if (c->impl == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

void db_close(struct db_conn *c)
{
	if (c == NULL)
		return;
	c->ops->close(c->impl);
	free(c);
}

int db_ping(struct db_conn *c, char *err, size_t errlen)
{
	return noted(c, c->ops->ping(c->impl, err, errlen));
}

int db_prepare(struct db_conn *c, bool setup_done, char *err, size_t errlen)
{
	return noted(c, c->ops->prepare(c->impl, setup_done, err, errlen));
}

int db_register_nodes(struct db_conn *c, const struct node_reg *regs, size_t n, char *err,
		      size_t errlen)
{
	char now[32];
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%d %H:%M:%S", &tm);
	return noted(c, c->ops->register_nodes(c->impl, regs, n, now, err, errlen));
}

int db_user_ok(struct db_conn *c, bool *ok, char *err, size_t errlen)
{
	return noted(c, c->ops->user_ok(c->impl, ok, err, errlen));
}

int db_wanted(struct db_conn *c, const char *node_id, struct id_vec *out, char *err,
	      size_t errlen)
{
	int rc = noted(c, c->ops->wanted(c->impl, node_id, out, err, errlen));

	if (rc == 0)
		id_vec_sort(out);
	return rc;
}

int db_wanted_all(struct db_conn *c, void (*fn)(void *arg, const char *node, int64_t id),
		  void *arg, char *err, size_t errlen)
{
	return noted(c, c->ops->wanted_all(c->impl, fn, arg, err, errlen));
}

/* ============================== worker pool ============================== */

struct db_pool {
	struct db_cfg cfg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct db_job *head, *tail;
	bool stop;
	unsigned n_threads;
	pthread_t *threads;
};

static struct db_job *pop_locked(struct db_pool *p)
{
	struct db_job *j = p->head;

	if (j != NULL) {
		p->head = j->next;
		if (p->head == NULL)
			p->tail = NULL;
		j->next = NULL;
	}
	return j;
}

/* Takes every queued ping (they all get the answer of the ping about to run). */
static struct db_job *take_pings_locked(struct db_pool *p, struct db_job *first)
{
	struct db_job *list = first, **last = &first->next, **pp = &p->head;

	p->tail = NULL;
	while (*pp != NULL) {
		struct db_job *j = *pp;
		if (j->run == NULL) {
			*pp = j->next;
			j->next = NULL;
			*last = j;
			last = &j->next;
		} else {
			p->tail = j;
			pp = &j->next;
		}
	}
	return list;
}

static void *worker_main(void *arg)
{
	struct db_pool *p = arg;
	struct db_conn *conn = NULL;
	char err[256];

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct db_job *j;

		while (p->head == NULL && !p->stop)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->head == NULL)
			break; /* stopping and nothing left */
		j = pop_locked(p);
		if (j->run == NULL)
			j = take_pings_locked(p, j);
		pthread_mutex_unlock(&p->lock);

		if (j->run != NULL) {
			if (conn == NULL)
				conn = db_open(&p->cfg, err, sizeof(err));
			j->run(conn, conn == NULL ? err : NULL, j, false);
		} else {
			int rc = -1;
			if (conn == NULL)
				conn = db_open(&p->cfg, err, sizeof(err));
			if (conn != NULL) {
				rc = db_ping(conn, err, sizeof(err));
				if (rc != 0) {
					db_close(conn);
					conn = NULL;
				}
			}
			while (j != NULL) {
				struct db_job *nx = j->next;
				j->ping_done(j, rc == 0, rc == 0 ? NULL : err);
				j = nx;
			}
		}
		if (conn != NULL && db_conn_failed(conn)) {
			db_close(conn);
			conn = NULL;
		}
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	db_close(conn);
	return NULL;
}

struct db_pool *db_pool_start(const struct db_cfg *cfg, unsigned threads)
{
	struct db_pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->cfg = *cfg;
	p->threads = calloc(threads, sizeof(*p->threads));
	if (p->threads == NULL || pthread_mutex_init(&p->lock, NULL) != 0) {
		free(p->threads);
		free(p);
		return NULL;
	}
	pthread_cond_init(&p->cond, NULL);
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
			break;
		p->n_threads++;
	}
	if (p->n_threads == 0) {
		db_pool_stop(p);
		return NULL;
	}
	return p;
}

void db_pool_submit(struct db_pool *p, struct db_job *job)
{
	bool refused;

	job->next = NULL;
	pthread_mutex_lock(&p->lock);
	refused = p->stop;
	if (!refused) {
		if (p->tail != NULL)
			p->tail->next = job;
		else
			p->head = job;
		p->tail = job;
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	if (refused) {
		if (job->run != NULL)
			job->run(NULL, "shutting down", job, true);
		else
			job->ping_done(job, false, "shutting down");
	}
}

void db_pool_stop(struct db_pool *p)
{
	struct db_job *rest;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	rest = p->head; /* nobody takes these any more once the workers see stop */
	p->head = p->tail = NULL;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	while (rest != NULL) {
		struct db_job *nx = rest->next;
		if (rest->run != NULL)
			rest->run(NULL, "shutting down", rest, true);
		else
			rest->ping_done(rest, false, "shutting down");
		rest = nx;
	}
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}
