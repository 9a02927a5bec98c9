/* nginx_worker.c — the nginx feed's own thread (see nginx_worker.h).
 *
 * Shared with the controller, under W.lock: the latest submitted node list ("pending"), the
 * stop flag and a copy of the feed's status.  The feed itself is touched only by the worker.
 * The controller publishes a snapshot for every probe result (hundreds a second with 1,000
 * nodes), and almost none of them changes what the include says: submit compares what the
 * include depends on (route_key) with the last list it handed over and hands over only a
 * change, so an unchanged list costs neither a copy nor a render.  Without submissions the
 * worker still looks at the template file every TEMPLATE_POLL_MS, so an edited template takes
 * effect without waiting for a node to change.
 * Must not: block the controller (submit compares, copies and signals, nothing more). */
#include "nginx_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "mailbox.h"

#define TEMPLATE_POLL_MS 2000

/* What the include depends on, per node: nginx_render.c reads nothing else of a node view
 * (of the state, only whether it is routable and whether it is maintenance: suspect <-> online
 * changes nothing). */
typedef struct {
    char id[KG_NODE_ID_MAX + 1];
    char host[KG_HOST_MAX + 1];
    bool routable, maintenance, host_valid;
} route_key;

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
    /* the last list handed to the worker, as route keys: the submitting thread's only */
    route_key *sent;
    int n_sent;
    bool sent_freeze;
    bool sent_any;
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
    bool freeze = false, have_wish = false;
    int64_t next_template_check = kg_mono_ms() + TEMPLATE_POLL_MS;
    pthread_mutex_lock(&W.lock);
    while (!W.stop) {
        int64_t due = nginx_feed_due_ms(W.feed);
        int64_t now = kg_wall_ms();
        bool run = W.has_pending || (due != 0 && now >= due);
        int64_t mono = kg_mono_ms();
        if (!run && have_wish && mono >= next_template_check) {
            next_template_check = mono + TEMPLATE_POLL_MS;
            run = nginx_feed_template_changed(W.feed); /* a stat(): fine under the lock */
        }
        if (!run) {
            /* sleep until a submission, the coalesced reload or the next template check */
            int64_t wait = due ? due - now : 60000;
            if (have_wish && next_template_check - mono < wait)
                wait = next_template_check - mono;
            struct timespec dl = kg_deadline_in(wait > 60000 ? 60000 : wait < 1 ? 1 : wait);
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
            have_wish = true;
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

/* Whether nodes[0..n) says what the last submitted list said, as far as the include goes. */
static bool same_as_sent(const kg_node_view *nodes, int n, bool freeze)
{
    if (!W.sent_any || n != W.n_sent || freeze != W.sent_freeze)
        return false;
    for (int i = 0; i < n; i++) {
        const route_key *k = &W.sent[i];
        if (k->routable != node_state_routable(nodes[i].state) ||
            k->maintenance != (nodes[i].state == NODE_MAINTENANCE) ||
            k->host_valid != nodes[i].host_valid ||
            memcmp(k->id, nodes[i].id, sizeof k->id) != 0 ||
            memcmp(k->host, nodes[i].host, sizeof k->host) != 0)
            return false;
    }
    return true;
}

/* Remembers nodes[0..n) as sent; false (and nothing remembered) when out of memory. */
static bool remember_sent(const kg_node_view *nodes, int n, bool freeze)
{
    W.sent_any = false;
    if (n > W.n_sent || !W.sent) {
        route_key *grown = realloc(W.sent, sizeof *grown * (size_t)(n > 0 ? n : 1));
        if (!grown)
            return false;
        W.sent = grown;
    }
    for (int i = 0; i < n; i++) {
        route_key *k = &W.sent[i];
        memcpy(k->id, nodes[i].id, sizeof k->id);
        memcpy(k->host, nodes[i].host, sizeof k->host);
        k->routable = node_state_routable(nodes[i].state);
        k->maintenance = nodes[i].state == NODE_MAINTENANCE;
        k->host_valid = nodes[i].host_valid;
    }
    W.n_sent = n;
    W.sent_freeze = freeze;
    W.sent_any = true;
    return true;
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
    if (!W.started || same_as_sent(nodes, n, freeze))
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
    if (!remember_sent(nodes, n, freeze))
        log_warn("nginx feed: out of memory remembering the node list; the next one is sent "
                 "whole");
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
    free(W.sent);
    W.sent = NULL;
    W.n_sent = 0;
    W.sent_any = false;
    nginx_feed_free(W.feed);
    W.feed = NULL;
    pthread_cond_destroy(&W.cond);
    W.started = false;
}
