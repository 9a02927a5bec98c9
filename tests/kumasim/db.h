/*
 * db.h — the cluster database as a Kuma node uses it: the tables it creates, its own `node`
 * row, the first user, and its assignments.  Two backends (db_sqlite.c, db_mariadb.c) behind
 * one interface, plus the worker pool (db.c) that runs database work off the HTTP and engine
 * threads.
 *
 * A connection belongs to one thread.  Every call returns 0 on success or -1 with a message
 * in err; after a failure the caller drops the connection and opens a new one for the next
 * piece of work (a MariaDB connection may be gone).
 */
#ifndef KUMASIM_DB_H
#define KUMASIM_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum db_kind { DB_NONE, DB_SQLITE, DB_MARIADB };

struct db_cfg {
	enum db_kind kind;
	const char *sqlite_path;
	const char *host;          /* MariaDB TCP host; NULL with a socket */
	const char *socket;        /* MariaDB unix socket */
	unsigned port;
	const char *user, *password, *name;
	unsigned timeout_s;        /* connect, read and write timeout */
};

struct id_vec {
	int64_t *v;
	size_t n, cap;
};

bool id_vec_push(struct id_vec *iv, int64_t id);
void id_vec_sort(struct id_vec *iv);
void id_vec_free(struct id_vec *iv);

/* One node's registration: what a real node writes into its row at start. */
struct node_reg {
	const char *id, *name, *host;
	bool primary;
};

struct db_conn;

struct db_ops {
	void *(*open)(const struct db_cfg *cfg, char *err, size_t errlen);
	void (*close)(void *impl);
	int (*ping)(void *impl, char *err, size_t errlen);
	int (*prepare)(void *impl, bool setup_done, char *err, size_t errlen);
	int (*register_nodes)(void *impl, const struct node_reg *regs, size_t n,
			      const char *utc_now, char *err, size_t errlen);
	int (*user_ok)(void *impl, bool *ok, char *err, size_t errlen);
	int (*wanted)(void *impl, const char *node_id, struct id_vec *out, char *err,
		      size_t errlen);
	int (*wanted_all)(void *impl, void (*fn)(void *arg, const char *node, int64_t id),
			  void *arg, char *err, size_t errlen);
};

extern const struct db_ops db_sqlite_ops;
extern const struct db_ops db_mariadb_ops;

struct db_conn *db_open(const struct db_cfg *cfg, char *err, size_t errlen);
void db_close(struct db_conn *c);
/* True once a call on c failed: the caller should close it and open a new one. */
bool db_conn_failed(const struct db_conn *c);
/* SELECT 1, as the node's health check runs it. */
int db_ping(struct db_conn *c, char *err, size_t errlen);
/* What a node's migrations and first-run setup leave: the node, monitor and user tables
 * (CREATE TABLE IF NOT EXISTS, the same columns kumaguard's stores create), SQLite in WAL
 * mode, and with setup_done a first user (id 1, active) when there is none. */
int db_prepare(struct db_conn *c, bool setup_done, char *err, size_t errlen);
/* Inserts or updates each row: status 'online', last_seen now (a UTC string, written as is:
 * on a MariaDB session whose time zone is not UTC it is stored off by the offset, as a real
 * node's is), host, name, is_primary. */
int db_register_nodes(struct db_conn *c, const struct node_reg *regs, size_t n, char *err,
		      size_t errlen);
/* Whether the user with id 1 exists and is active (no user table: false, not an error). */
int db_user_ok(struct db_conn *c, bool *ok, char *err, size_t errlen);
/* SELECT id FROM monitor WHERE active = 1 AND COALESCE(assigned_node, node_id) = node_id,
 * sorted ascending. */
int db_wanted(struct db_conn *c, const char *node_id, struct id_vec *out, char *err,
	      size_t errlen);
/* Every active monitor with its effective node: one scan for many nodes at once. */
int db_wanted_all(struct db_conn *c, void (*fn)(void *arg, const char *node, int64_t id),
		  void *arg, char *err, size_t errlen);

/* ---- worker pool ---- */

/*
 * Work that needs the database is a job: the HTTP threads and the engine queue jobs, and a few
 * worker threads (each with its own connection, reopened after a failure) run them and call
 * job->done on the worker thread.  Health pings are coalesced: a worker that takes a ping also
 * takes every ping queued behind it and answers them all with one SELECT 1 that began after
 * each of them was queued.
 */
struct db_job;
/* c is NULL when no connection could be opened (open_err says why) or when shutting_down. */
typedef void (*db_job_fn)(struct db_conn *c, const char *open_err, struct db_job *job,
			  bool shutting_down);

struct db_job {
	db_job_fn run;          /* NULL for a ping */
	void (*ping_done)(struct db_job *job, bool ok, const char *err);
	void *arg;
	struct db_job *next;
};

struct db_pool;

struct db_pool *db_pool_start(const struct db_cfg *cfg, unsigned threads);
void db_pool_submit(struct db_pool *p, struct db_job *job);
/* Stops accepting jobs, lets the workers finish what they run, calls every queued job with
 * shutting_down set (pings get ok false), joins the workers and frees the pool. */
void db_pool_stop(struct db_pool *p);

#endif
