/* nginx_worker.c — the nginx feed's own thread (see nginx_worker.h).
 *
 * Shared with the controller, under W.lock: the latest submitted node list ("pending"), the
 * stop flag and a copy of the feed's status.  The feed itself is touched only by the worker.
 * Must not: block the controller (submit copies and signals, nothing more). */
#include "nginx_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "mailbox.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool stop;
    kg_nginx_feed *feed;
    /* the latest wish, owned under lock */
    kg_node_view *pending;
    int n_pending;
    bool freeze_pending;
    bool has_pending;
    kg_nginx_view status;
} W = {.lock = PTHREAD_MUTEX_INITIALIZER};


static void report(const nginx_feed_outcome *o)
{
    kg_msg m = {.kind = MSG_NGINX_OUTCOME, .flag = o->ok, .value = o->duration_ms};
    snprintf(m.text, sizeof m.text, "%s", o->error);
    mailbox_post(&m);
}

static void *worker_main(void *arg)
{
    (void)arg;
    kg_node_view *nodes = NULL; /* the worker's copy of the last wish (re-used for due steps) */
    int n = 0;
    bool freeze = false;
    pthread_mutex_lock(&W.lock);
    while (!W.stop) {
        int64_t due = nginx_feed_due_ms(W.feed);
        int64_t now = kg_wall_ms();
        if (!W.has_pending && (due == 0 || now < due)) {
            /* sleep until a submission, or until the coalesced reload is due */
            int64_t wait = due ? due - now : 60000;
            struct timespec dl = kg_deadline_in(wait > 60000 ? 60000 : wait);
            pthread_cond_timedwait(&W.cond, &W.lock, &dl);
            continue;
        }
        if (W.has_pending) { /* take the latest wish; older ones are simply superseded */
            free(nodes);
            nodes = W.pending;
            n = W.n_pending;
            freeze = W.freeze_pending;
            W.pending = NULL;
            W.has_pending = false;
        }
        pthread_mutex_unlock(&W.lock);
        nginx_feed_outcome o = {0};
        nginx_feed_update(W.feed, nodes, n, freeze, kg_wall_ms(), &o);
        kg_nginx_view st;
        nginx_feed_status(W.feed, &st);
        if (o.attempted)
            report(&o);
        pthread_mutex_lock(&W.lock);
        W.status = st;
    }
    pthread_mutex_unlock(&W.lock);
    free(nodes);
    return NULL;
}

int nginx_worker_start(kg_nginx_feed *feed, char *err, size_t errlen)
{
    kg_cond_init(&W.cond);
    W.feed = feed;
    W.stop = false;
    nginx_feed_status(feed, &W.status);
    if (pthread_create(&W.thread, NULL, worker_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the nginx feed thread: %s", strerror(errno));
        nginx_feed_free(feed);
        W.feed = NULL;
        pthread_cond_destroy(&W.cond);
        return -1;
    }
    W.started = true;
    return 0;
}

void nginx_worker_submit(const kg_node_view *nodes, int n, bool freeze)
{
    if (!W.started)
        return;
    kg_node_view *copy = NULL;
    if (n > 0) {
        copy = malloc(sizeof *copy * (size_t)n);
        if (!copy) {
            log_error("nginx feed: out of memory copying the node list");
            return;
        }
        memcpy(copy, nodes, sizeof *copy * (size_t)n);
    }
    pthread_mutex_lock(&W.lock);
    free(W.pending);
    W.pending = copy;
    W.n_pending = n;
    W.freeze_pending = freeze;
    W.has_pending = true;
    pthread_cond_signal(&W.cond);
    pthread_mutex_unlock(&W.lock);
}

void nginx_worker_status(kg_nginx_view *out)
{
    pthread_mutex_lock(&W.lock);
    *out = W.status;
    pthread_mutex_unlock(&W.lock);
}

void nginx_worker_stop(void)
{
    if (!W.started)
        return;
    pthread_mutex_lock(&W.lock);
    W.stop = true;
    pthread_cond_signal(&W.cond);
    pthread_mutex_unlock(&W.lock);
    pthread_join(W.thread, NULL);
    free(W.pending);
    W.pending = NULL;
    W.has_pending = false;
    nginx_feed_free(W.feed);
    W.feed = NULL;
    pthread_cond_destroy(&W.cond);
    W.started = false;
}
