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

const double kg_latency_bucket_bounds[10] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t snap_cond;
static pthread_once_t snap_once = PTHREAD_ONCE_INIT;

/* Timed waits use CLOCK_MONOTONIC so a wall-clock step cannot stretch a wait. */
static void snap_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&snap_cond, &a);
    pthread_condattr_destroy(&a);
}
static kg_snapshot *current;
static bool shutting_down;

static const char *const kind_names[EV_KIND_COUNT] = {
    [EV_STATE_CHANGE] = "state_change", [EV_FAILOVER] = "failover",
    [EV_REVERT] = "revert",             [EV_REBALANCE] = "rebalance",
    [EV_FORCE_REBALANCE] = "force_rebalance", [EV_ADOPTION] = "adoption",
    [EV_CAPACITY_WARNING] = "capacity_warning", [EV_PANIC] = "panic",
    [EV_NGINX_RELOAD] = "nginx_reload", [EV_NGINX_FAILED] = "nginx_failed",
    [EV_LEADER] = "leader",             [EV_DB] = "database",
    [EV_OPERATOR] = "operator",         [EV_MONITOR] = "monitor",
    [EV_SETUP] = "setup",               [EV_RECONCILE_FAILED] = "reconcile_failed",
};

const char *event_kind_name(kg_event_kind k)
{
    return (k >= 0 && k < EV_KIND_COUNT) ? kind_names[k] : "unknown";
}

int event_kind_parse(const char *s)
{
    for (int i = 0; s && i < EV_KIND_COUNT; i++)
        if (strcmp(s, kind_names[i]) == 0)
            return i;
    return -1;
}

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

void snapshot_publish(kg_snapshot *s)
{
    pthread_once(&snap_once, snap_init);
    pthread_mutex_lock(&snap_lock);
    kg_snapshot *old = current;
    s->seq = old ? old->seq + 1 : 1;
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
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
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
