/* snapshot.c — publication of immutable cluster snapshots (see snapshot.h for the contract).
 *
 * Owns: the current pointer, the publish lock and condition variable, the event-kind names.
 * Must not: inspect snapshot contents beyond freeing them. */
#include "snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

const double kg_latency_bucket_bounds[10] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t snap_cond;
static pthread_once_t snap_once = PTHREAD_ONCE_INIT;

/* Timed waits use CLOCK_MONOTONIC so a wall-clock step cannot stretch a wait. */
static void snap_init(void) { kg_cond_init(&snap_cond); }
static kg_snapshot *current;
static uint64_t last_seq; /* never reset, not even by snapshot_clear: a reader that remembers
                           * the seq it last worked from (the prober) must see any later
                           * snapshot as newer */
static bool shutting_down;



kg_snapshot *snapshot_new(int n_nodes)
{
    kg_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (n_nodes > 0) {
        s->nodes = calloc((size_t)n_nodes, sizeof *s->nodes);
        if (!s->nodes) {
            free(s);
            return NULL;
        }
    }
    s->n_nodes = n_nodes;
    atomic_init(&s->refs, 1);
    atomic_init(&s->cached_json, NULL);
    return s;
}

static void snapshot_free(kg_snapshot *s)
{
    free(atomic_load(&s->cached_json));
    free(s->nodes);
    free(s);
}

void snapshot_release(kg_snapshot *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        snapshot_free(s);
}

kg_snapshot *snapshot_retain(kg_snapshot *s)
{
    if (s)
        atomic_fetch_add(&s->refs, 1);
    return s;
}

void snapshot_publish(kg_snapshot *s)
{
    pthread_once(&snap_once, snap_init);
    pthread_mutex_lock(&snap_lock);
    kg_snapshot *old = current;
    s->seq = ++last_seq;
    current = s;
    pthread_cond_broadcast(&snap_cond);
    pthread_mutex_unlock(&snap_lock);
    snapshot_release(old);
}

kg_snapshot *snapshot_acquire(void)
{
    pthread_mutex_lock(&snap_lock);
    kg_snapshot *s = current;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&snap_lock);
    return s;
}

kg_snapshot *snapshot_wait_newer(uint64_t after_seq, int timeout_ms)
{
    pthread_once(&snap_once, snap_init);
    struct timespec deadline = kg_deadline_in(timeout_ms);
    kg_snapshot *s = NULL;
    pthread_mutex_lock(&snap_lock);
    while (!shutting_down && (!current || current->seq <= after_seq)) {
        if (pthread_cond_timedwait(&snap_cond, &snap_lock, &deadline) == ETIMEDOUT)
            break;
    }
    if (!shutting_down && current && current->seq > after_seq) {
        s = current;
        atomic_fetch_add(&s->refs, 1);
    }
    pthread_mutex_unlock(&snap_lock);
    return s;
}

void snapshot_shutdown(void)
{
    pthread_once(&snap_once, snap_init);
    pthread_mutex_lock(&snap_lock);
    shutting_down = true;
    pthread_cond_broadcast(&snap_cond);
    pthread_mutex_unlock(&snap_lock);
}

void snapshot_clear(void)
{
    pthread_mutex_lock(&snap_lock);
    kg_snapshot *old = current;
    current = NULL;
    pthread_mutex_unlock(&snap_lock);
    snapshot_release(old);
}

const kg_node_view *snapshot_find_node(const kg_snapshot *s, const char *id)
{
    int lo = 0, hi = s->n_nodes - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(s->nodes[mid].id, id);
        if (c == 0)
            return &s->nodes[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}
