/* setup_watch.c — first-run setup: the watcher thread and the routing gate (see
 * setup_watch.h).
 *
 * Shared under W.lock: the last state seen and the stop flag.  The watcher's store is touched
 * only by the watcher.  Must not: write to the database or hold W.lock while querying. */
#include "setup_watch.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kg_clock.h"
#include "log.h"
#include "mailbox.h"
#include "nginx_worker.h"
#include "store.h"

#define POLL_PENDING_MS 1000   /* setup pending or no `user` table yet: look every second */
#define POLL_COMPLETE_MS 30000 /* setup done: only a restored or emptied database changes it */
#define POLL_ERROR_MS 5000

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool stop;
    setup_state st;
} W = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- pure ------------------------------------------------------------------------------- */

const kg_node_view *setup_primary(const kg_node_view *nodes, int n)
{
    for (int i = 0; i < n; i++)
        if (nodes[i].is_primary)
            return &nodes[i];
    for (int i = 0; i < n; i++)
        if (strcmp(nodes[i].id, "node1") == 0)
            return &nodes[i];
    return NULL;
}

int setup_gate_nodes(kg_node_view *nodes, int n, const char *primary)
{
    int marked = 0;
    for (int i = 0; i < n; i++) {
        if (primary && strcmp(nodes[i].id, primary) == 0)
            continue;
        nodes[i].state = NODE_MAINTENANCE;
        marked++;
    }
    return marked;
}

const char *setup_routing_mode(const kg_snapshot *s)
{
    return s->setup_gated && !s->setup_complete && s->setup_primary[0] ? "primary_only"
                                                                        : "cluster";
}

/* ---- state ------------------------------------------------------------------------------ */

void setup_watch_get(setup_state *out)
{
    pthread_mutex_lock(&W.lock);
    *out = W.st;
    pthread_mutex_unlock(&W.lock);
}

bool setup_watch_complete(void)
{
    setup_state st;
    setup_watch_get(&st);
    return !(st.known && st.gated && !st.complete);
}

void setup_watch_fill(kg_snapshot *s)
{
    setup_state st;
    setup_watch_get(&st);
    s->setup_gated = st.known && st.gated;
    s->setup_complete = !s->setup_gated || st.complete;
    s->setup_checked_ms = st.checked_ms;
    const kg_node_view *p = setup_primary(s->nodes, s->n_nodes);
    snprintf(s->setup_primary, sizeof s->setup_primary, "%s", p ? p->id : "");
}

void setup_gate_submit(const kg_snapshot *s, bool freeze)
{
    if (strcmp(setup_routing_mode(s), "primary_only") != 0 || s->n_nodes == 0) {
        nginx_worker_submit(s->nodes, s->n_nodes, freeze);
        return;
    }
    kg_node_view *copy = malloc(sizeof *copy * (size_t)s->n_nodes);
    if (!copy) {
        log_error("setup gate: out of memory copying the node list; nginx left as it was");
        return;
    }
    memcpy(copy, s->nodes, sizeof *copy * (size_t)s->n_nodes);
    setup_gate_nodes(copy, s->n_nodes, s->setup_primary);
    nginx_worker_submit(copy, s->n_nodes, freeze);
    free(copy);
}

/* ---- the watcher ------------------------------------------------------------------------ */

/* Tells the controller, with the event text when the change is worth one.  False (try again
 * later) before the controller's first snapshot, which names the primary. */
static bool announce(const setup_state *before, const setup_state *now)
{
    bool was_pending = before->known && before->gated && !before->complete;
    bool pending = now->gated && !now->complete;
    kg_msg m = {.kind = MSG_SETUP_CHANGED};
    kg_snapshot *s = snapshot_acquire();
    if (!s)
        return false;
    const kg_node_view *p = setup_primary(s->nodes, s->n_nodes);
    snprintf(m.node, sizeof m.node, "%s", p ? p->id : "");
    if (pending && p)
        snprintf(m.text, sizeof m.text,
                 "first-run setup pending: no Uptime Kuma user yet; every request goes to the "
                 "primary node %s until the first user exists", p->id);
    else if (pending)
        snprintf(m.text, sizeof m.text,
                 "first-run setup pending: no Uptime Kuma user yet, and no primary node is "
                 "known (no is_primary row, no node1): routing left as it is");
    else if (was_pending)
        snprintf(m.text, sizeof m.text,
                 "first-run setup complete: a user exists; requests are spread over the "
                 "cluster and reconcile calls resume");
    snapshot_release(s);
    mailbox_post(&m);
    return true;
}

/* One look at the `user` table; returns the wait before the next one. */
static int look(kg_store *store, const setup_state *before, setup_state *now)
{
    char err[256];
    store_setup_state got;
    *now = *before;
    if (store->ops->setup_status(store, &got, err, sizeof err) != STORE_OK) {
        snprintf(now->error, sizeof now->error, "%.150s", err);
        return POLL_ERROR_MS;
    }
    now->known = true;
    now->gated = got != STORE_SETUP_NOT_GATED;
    now->complete = got == STORE_SETUP_COMPLETE;
    now->checked_ms = kg_wall_ms();
    now->error[0] = '\0';
    return got == STORE_SETUP_COMPLETE ? POLL_COMPLETE_MS : POLL_PENDING_MS;
}

static bool state_changed(const setup_state *a, const setup_state *b)
{
    return a->known != b->known || a->gated != b->gated || a->complete != b->complete;
}

static void *watch_main(void *arg)
{
    kg_store *store = arg;
    setup_state announced = {0}; /* what the controller was told (nothing yet) */
    int wait = POLL_PENDING_MS;
    pthread_mutex_lock(&W.lock);
    while (!W.stop) {
        struct timespec dl = kg_deadline_in(wait);
        while (!W.stop && pthread_cond_timedwait(&W.cond, &W.lock, &dl) != ETIMEDOUT)
            ;
        if (W.stop)
            break;
        setup_state before = W.st, now;
        pthread_mutex_unlock(&W.lock);
        wait = look(store, &before, &now);
        if (state_changed(&before, &now) && now.gated && !now.complete)
            log_warn("first-run setup pending: no Uptime Kuma user yet");
        else if (state_changed(&before, &now) && now.complete)
            log_info("first-run setup complete: cluster routing applies");
        pthread_mutex_lock(&W.lock);
        W.st = now;
        pthread_mutex_unlock(&W.lock);
        if (state_changed(&announced, &now) && announce(&announced, &now))
            announced = now;
        pthread_mutex_lock(&W.lock);
    }
    pthread_mutex_unlock(&W.lock);
    store_close(store);
    return NULL;
}

/* The first look is made here, before the controller publishes its first snapshot, so a
 * fresh cluster is gated from kumaguard's first nginx render on (at the cost of waiting up to
 * DB_TIMEOUT at start-up when the database does not answer). */
int setup_watch_start(const kg_config *cfg, char *err, size_t errlen)
{
    memset(&W.st, 0, sizeof W.st);
    if (!cfg->db_host || !cfg->db_host[0])
        return 0; /* the embedded store is never gated */
    kg_store *store = store_open(cfg, err, errlen);
    if (!store)
        return -1;
    setup_state first;
    look(store, &W.st, &first);
    if (first.known && first.gated && !first.complete)
        log_warn("first-run setup pending: no Uptime Kuma user yet");
    pthread_mutex_lock(&W.lock);
    W.st = first;
    pthread_mutex_unlock(&W.lock);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&W.cond, &a);
    pthread_condattr_destroy(&a);
    W.stop = false;
    if (pthread_create(&W.thread, NULL, watch_main, store) != 0) {
        snprintf(err, errlen, "cannot start the setup watcher thread: %s", strerror(errno));
        pthread_cond_destroy(&W.cond);
        store_close(store);
        return -1;
    }
    W.started = true;
    return 0;
}

void setup_watch_stop(void)
{
    if (!W.started)
        return;
    pthread_mutex_lock(&W.lock);
    W.stop = true;
    pthread_cond_signal(&W.cond);
    pthread_mutex_unlock(&W.lock);
    pthread_join(W.thread, NULL);
    pthread_cond_destroy(&W.cond);
    W.started = false;
}
