/* db_worker.c — the database applier thread (see db_worker.h).
 *
 * Shared with the controller, under W.lock: the one-job slot and the stop flag.  The store is
 * touched by this thread only (it is opened here, used here, closed after the thread ends).
 * Must not: decide, or hold W.lock while the database works. */
#include "db_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "mailbox.h"
#include "snapshot.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool stop;
    db_job *slot;        /* submitted, not yet taken */
    bool busy;           /* a job is being worked on or waiting in the slot */
    const kg_config *cfg;
    kg_store *store;     /* worker thread only */
    bool schema_ready;   /* worker thread only */
} W = {.lock = PTHREAD_MUTEX_INITIALIZER};

db_job *db_job_new(void)
{
    db_job *j = calloc(1, sizeof *j);
    if (j) {
        nametab_init(&j->moves_tab);
        nametab_init(&j->monitors_tab);
    }
    return j;
}

void db_job_free(db_job *j)
{
    if (!j)
        return;
    free(j->states);
    free(j->events);
    free(j->moves);
    free((void *)j->monitor_op);
    nametab_free(&j->moves_tab);
    free(j->nodes);
    store_free_monitors(&j->monitors);
    nametab_free(&j->monitors_tab);
    free(j);
}

static void job_free_cb(void *p) { db_job_free(p); }

/* Records a failed step; returns false so callers can `return fail(...)`. */
static bool fail(db_job *j, const char *step, int rc, const char *err)
{
    j->rc = rc;
    snprintf(j->failed_step, sizeof j->failed_step, "%s", step);
    snprintf(j->error, sizeof j->error, "%s", err);
    return false;
}

/* Connection, schema, static rows. */
static bool prepare(db_job *j)
{
    char err[256] = "";
    if (!W.store) {
        W.store = store_open(W.cfg, err, sizeof err);
        if (!W.store)
            return fail(j, "connect", STORE_ERROR, err);
        W.schema_ready = false;
    }
    W.store->fence_generation = j->generation;
    if (!W.schema_ready) {
        int rc = W.store->ops->ensure_schema(W.store, W.cfg->init_schema, err, sizeof err);
        if (rc != STORE_OK)
            return fail(j, "schema", rc,
                        rc == STORE_SCHEMA_MISSING
                            ? "waiting for the Kuma nodes to create the node/monitor tables"
                            : err);
        W.schema_ready = true;
        j->upsert_static = true; /* a fresh schema (or connection) gets them again */
    }
    j->schema_ready = true;
    if (j->upsert_static) {
        for (int i = 0; i < W.cfg->n_static_nodes; i++) {
            const kg_static_node *sn = &W.cfg->static_nodes[i];
            int rc = W.store->ops->upsert_node(W.store, sn->id, sn->host, err, sizeof err);
            if (rc != STORE_OK)
                return fail(j, "register static node", rc, err);
        }
    }
    return true;
}

static void run_job(db_job *j)
{
    char err[256] = "";
    int rc;
    j->started_mono_ms = kg_mono_ms();
    j->rc = STORE_OK;
    if (!prepare(j))
        goto out;
    if (j->release_lease) {
        rc = W.store->ops->release_lease(W.store, err, sizeof err);
        if (rc != STORE_OK)
            fail(j, "release lease", rc, err);
        goto out;
    }
    if (j->lease) {
        rc = W.store->ops->lease(W.store, W.cfg->instance_id, W.cfg->lease_ttl_ms,
                                 &j->lease_leader, &j->lease_generation, err, sizeof err);
        if (rc != STORE_OK) {
            j->lease_lost = rc == STORE_FENCED;
            fail(j, "leader lease", rc, err);
            goto out;
        }
        j->lease_done = true;
        if (!j->lease_leader || j->lease_generation != j->generation)
            j->generation = 0; /* lost or new term: the writes below were decided for the old
                                  one; the controller decides again */
        W.store->fence_generation = j->generation;
    }
    if (j->generation > 0) {
        if (j->n_states) {
            rc = W.store->ops->write_node_states(W.store, j->states, j->n_states, err,
                                                 sizeof err);
            if (rc != STORE_OK) {
                fail(j, "write node states", rc, err);
                goto out;
            }
            j->states_done = true;
        }
        for (size_t i = 0; i < j->n_events; i++) {
            rc = W.store->ops->append_event(W.store, &j->events[i], err, sizeof err);
            if (rc != STORE_OK) {
                fail(j, "append event", rc, err);
                goto out;
            }
        }
        j->events_done = j->n_events > 0;
        if (j->n_moves) {
            rc = W.store->ops->apply_moves(W.store, &j->moves_tab, j->moves, j->n_moves,
                                           j->what, &j->applied, err, sizeof err);
            if (rc != STORE_OK) {
                fail(j, j->what[0] ? j->what : "apply moves", rc, err);
                goto out;
            }
            j->moves_done = true;
        }
        if (j->monitor_op) {
            /* validated against the nodes as the API last showed them, written fenced, all
             * or nothing (monitor_ops.c) */
            kg_snapshot *snap = snapshot_acquire();
            monitor_ops_run(W.store, j->monitor_op, snap, j->actor, &j->monitor_op_outcome);
            snapshot_release(snap);
            j->monitor_op_done = true;
            rc = j->monitor_op_outcome.store_rc;
            if (rc == STORE_FENCED || rc == STORE_ERROR) {
                fail(j, "monitor operation", rc, j->monitor_op_outcome.v.detail);
                goto out;
            }
        }
    }
    if (j->load_nodes) {
        rc = W.store->ops->load_nodes(W.store, &j->nodes, &j->n_nodes, err, sizeof err);
        if (rc != STORE_OK) {
            fail(j, "load nodes", rc, err);
            goto out;
        }
        j->nodes_done = true;
    }
    if (j->load_monitors && j->monitors_cached && W.store->ops->monitors_changed) {
        /* the cheap probe first: an unchanged table is not read again */
        bool changed = true;
        if (W.store->ops->monitors_changed(W.store, &changed, err, sizeof err) == STORE_OK &&
            !changed) {
            j->monitors_unchanged = true;
            j->monitors_done = true;
        }
    }
    if (j->load_monitors && !j->monitors_unchanged) {
        if (j->generation > 0) {
            /* the leader drops override records someone else changed under us, fenced, before
             * a full read (only a changed table can have made one stale) */
            size_t forgotten = 0;
            rc = W.store->ops->forget_stale_overrides(W.store, &forgotten, err, sizeof err);
            if (rc != STORE_OK) {
                fail(j, "forget stale override records", rc, err);
                goto out;
            }
        }
        rc = W.store->ops->load_monitors(W.store, &j->monitors_tab, &j->monitors, err,
                                         sizeof err);
        if (rc != STORE_OK) {
            fail(j, "load monitors", rc, err);
            goto out;
        }
        j->monitors_done = true;
    }
    if (j->prune_before_ms > 0 && j->generation > 0) {
        rc = W.store->ops->prune_events(W.store, j->prune_before_ms, err, sizeof err);
        if (rc != STORE_OK) {
            fail(j, "prune events", rc, err);
            goto out;
        }
        j->prune_done = true;
    }
    if (!j->lease && !j->n_states && !j->n_events && !j->n_moves && !j->load_nodes &&
        !j->load_monitors && !j->prune_before_ms && !j->monitor_op) {
        /* an empty job is a liveness check */
        rc = W.store->ops->ping(W.store, err, sizeof err);
        if (rc != STORE_OK)
            fail(j, "ping", rc, err);
    }
out:
    if (j->rc == STORE_ERROR || j->rc == STORE_SCHEMA_MISSING)
        W.schema_ready = W.schema_ready && j->rc != STORE_SCHEMA_MISSING;
    j->finished_mono_ms = kg_mono_ms();
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&W.lock);
    while (!W.stop) {
        if (!W.slot) {
            pthread_cond_wait(&W.cond, &W.lock);
            continue;
        }
        db_job *j = W.slot;
        W.slot = NULL;
        pthread_mutex_unlock(&W.lock);
        run_job(j);
        kg_msg m = {.kind = MSG_DB_DONE, .data = j, .data_free = job_free_cb};
        pthread_mutex_lock(&W.lock);
        W.busy = false;
        pthread_mutex_unlock(&W.lock);
        if (mailbox_post(&m) != 0)
            db_job_free(j); /* the controller is gone: nobody will read it */
        pthread_mutex_lock(&W.lock);
    }
    pthread_mutex_unlock(&W.lock);
    return NULL;
}

int db_worker_start(const kg_config *cfg, char *err, size_t errlen)
{
    W.cfg = cfg;
    W.stop = false;
    W.slot = NULL;
    W.busy = false;
    if (kg_cond_init(&W.cond) != 0) {
        snprintf(err, errlen, "cannot create the database worker's condition variable");
        return -1;
    }
    if (pthread_create(&W.thread, NULL, worker_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the database thread: %s", strerror(errno));
        pthread_cond_destroy(&W.cond);
        return -1;
    }
    W.started = true;
    return 0;
}

int db_worker_submit(db_job *j)
{
    pthread_mutex_lock(&W.lock);
    if (!W.started || W.stop || W.busy) {
        pthread_mutex_unlock(&W.lock);
        return -1;
    }
    W.slot = j;
    W.busy = true;
    pthread_cond_signal(&W.cond);
    pthread_mutex_unlock(&W.lock);
    return 0;
}

void db_worker_stop(void)
{
    if (!W.started)
        return;
    pthread_mutex_lock(&W.lock);
    W.stop = true;
    pthread_cond_signal(&W.cond);
    pthread_mutex_unlock(&W.lock);
    pthread_join(W.thread, NULL);
    db_job_free(W.slot);
    W.slot = NULL;
    if (W.store)
        store_close(W.store);
    W.store = NULL;
    W.schema_ready = false;
    pthread_cond_destroy(&W.cond);
    W.started = false;
}
