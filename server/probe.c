/* probe.c — the prober thread: concurrent HTTP health checks with libcurl multi.
 *
 * Each node has its own schedule.  The next probe is due one interval after the previous one
 * *started* (so a slow answer does not stretch the cadence): the normal interval plus up to 10 %
 * random jitter, so probes of many nodes do not beat in step, or the fast interval without
 * jitter while the node is in transition — its last probe failed but it is not yet offline, or
 * it is suspect, recovering, or not yet judged.  The prober keeps its own "last probe failed"
 * bit because the snapshot lags one controller step behind: without it the second probe of a
 * freshly failing node would still wait a whole normal interval.
 *
 * Easy handles are lent to a probe while it runs and kept in a small pool between probes (one
 * per node cost about 20 KB each, most of the prober's memory with 1,000 nodes, while only the
 * few probes in flight need one).
 *
 * Owns: the curl multi handle, the pool of easy handles, the schedule.
 * Must not: decide node state (health.c does, in the controller) or touch the store. */
#include "probe.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "hostcheck.h"
#include "log.h"
#include "mailbox.h"
#include "netpolicy_curl.h"
#include "snapshot.h"

#define BODY_MAX 65536
#define NOT_DUE INT64_MAX /* P.due of a target whose probe is in flight */
#define IDLE_HANDLES_MAX 32 /* easy handles kept between probes; more are cleaned up */

typedef struct {
    char id[KG_NODE_ID_MAX + 1];
    char host[KG_HOST_MAX + 1];
    char url[KG_HOST_MAX + 512];
    CURL *easy;              /* lent from the pool while a probe is in flight, else NULL */
    bool in_flight;
    bool last_failed;
    int idx;                 /* position in P.targets (and P.due) */
    int64_t started_ms;
    int64_t next_due_ms;
    char *body;
    size_t body_len;
    netpolicy_guard guard;   /* set when the connect-time policy check refused the address */
} target;

static struct {
    int interval_ms, fast_ms, timeout_ms, expected;
    char path[256];
    CURLM *multi;
    target **targets;        /* sorted by id (strcmp), as the snapshot's nodes */
    int64_t *due;            /* due[i] = targets[i]->next_due_ms, NOT_DUE while in flight */
    int n_targets;
    uint64_t synced_seq;     /* the snapshot the list was last brought in line with */
    bool synced;
    CURL *idle[IDLE_HANDLES_MAX];
    int n_idle;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_bool trigger_all;
    char trigger_except[KG_NODE_ID_MAX + 1];
    uint64_t rng;
} P;

/* The schedule runs on the monotonic clock: a wall-clock step (NTP at boot, a VM restored
 * from a snapshot) must neither stop probing nor probe in a burst. */
static pthread_mutex_t except_lock = PTHREAD_MUTEX_INITIALIZER; /* guards P.trigger_except */


static uint64_t next_rand(void)
{
    /* xorshift64*: only used for jitter */
    P.rng ^= P.rng >> 12;
    P.rng ^= P.rng << 25;
    P.rng ^= P.rng >> 27;
    return P.rng * 2685821657736338717ULL;
}

probe_result probe_classify(int curl_code, long http_status, const char *body, size_t body_len,
                            int expected_status, double latency_ms)
{
    probe_result r = {.outcome = PROBE_OK, .http_status = (int)http_status,
                      .latency_ms = latency_ms};
    switch (curl_code) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        r.outcome = PROBE_TIMEOUT;
        snprintf(r.reason, sizeof r.reason, "timeout after %.0f ms", latency_ms);
        return r;
    case CURLE_COULDNT_CONNECT:
        r.outcome = PROBE_CONNECT_FAILED;
        snprintf(r.reason, sizeof r.reason, "connection refused");
        return r;
    case CURLE_COULDNT_RESOLVE_HOST:
        r.outcome = PROBE_CONNECT_FAILED;
        snprintf(r.reason, sizeof r.reason, "cannot resolve host");
        return r;
    default:
        r.outcome = PROBE_ERROR;
        snprintf(r.reason, sizeof r.reason, "%s", curl_easy_strerror((CURLcode)curl_code));
        return r;
    }
    if (http_status != expected_status) {
        r.outcome = PROBE_BAD_STATUS;
        snprintf(r.reason, sizeof r.reason, "HTTP %ld", http_status);
        return r;
    }
    if (body && body_len > 0) {
        json_tokener *tok = json_tokener_new();
        json_object *root = tok ? json_tokener_parse_ex(tok, body, (int)body_len) : NULL;
        json_object *st;
        if (root && json_object_is_type(root, json_type_object) &&
            json_object_object_get_ex(root, "status", &st) &&
            json_object_is_type(st, json_type_string) &&
            strcmp(json_object_get_string(st), "healthy") != 0) {
            r.outcome = PROBE_BAD_BODY;
            snprintf(r.reason, sizeof r.reason, "status \"%.60s\"", json_object_get_string(st));
        }
        json_object_put(root);
        if (tok)
            json_tokener_free(tok);
    }
    return r;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    target *t = userp;
    size_t n = size * nmemb;
    if (t->body_len + n > BODY_MAX)
        return 0; /* abort: a health answer is small; anything bigger is wrong */
    char *nb = realloc(t->body, t->body_len + n + 1);
    if (!nb)
        return 0;
    memcpy(nb + t->body_len, data, n);
    t->body = nb;
    t->body_len += n;
    t->body[t->body_len] = 0;
    return n;
}

static void post_result(const target *t, const probe_result *r)
{
    kg_msg m = {.kind = MSG_PROBE_RESULT, .probe = *r};
    snprintf(m.node, sizeof m.node, "%s", t->id);
    mailbox_post(&m);
}

static CURL *handle_take(void)
{
    return P.n_idle ? P.idle[--P.n_idle] : curl_easy_init();
}

static void handle_return(CURL *e)
{
    if (P.n_idle < IDLE_HANDLES_MAX)
        P.idle[P.n_idle++] = e;
    else
        curl_easy_cleanup(e);
}

static void target_free(target *t)
{
    if (t->in_flight) {
        curl_multi_remove_handle(P.multi, t->easy);
        handle_return(t->easy);
    }
    free(t->body);
    free(t);
}

static target *target_new(const kg_node_view *n, int64_t now)
{
    target *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    snprintf(t->id, sizeof t->id, "%s", n->id);
    snprintf(t->host, sizeof t->host, "%s", n->host);
    snprintf(t->url, sizeof t->url, "http://%s%s", n->host, P.path);
    t->next_due_ms = now;
    return t;
}

/* Brings the target list in line with the snapshot: new nodes are due now, vanished nodes,
 * nodes whose host changed (rebuilt) and nodes under maintenance are dropped (an in-flight
 * probe of them is abandoned).  Both lists are sorted by id, so this is one merge pass, and it
 * runs only when a new snapshot was published: the loop wakes thousands of times a second
 * with 1,000 nodes, and a lookup per node per wake-up cost most of a core. */
static void sync_targets(const kg_snapshot *s, int64_t now)
{
    if (P.synced && (s ? s->seq : 0) == P.synced_seq)
        return;
    int n_nodes = s ? s->n_nodes : 0;
    target **next = malloc(((size_t)n_nodes + 1) * sizeof *next);
    int64_t *due = malloc(((size_t)n_nodes + 1) * sizeof *due);
    if (!next || !due) {
        free(next);
        free(due);
        return; /* keep probing the old list; try again at the next wake-up */
    }
    int i = 0, k = 0;
    for (int j = 0; j < n_nodes; j++) {
        const kg_node_view *n = &s->nodes[j];
        while (i < P.n_targets && strcmp(P.targets[i]->id, n->id) < 0)
            target_free(P.targets[i++]);
        target *t = NULL;
        if (i < P.n_targets && strcmp(P.targets[i]->id, n->id) == 0) {
            t = P.targets[i++];
            if (n->state == NODE_MAINTENANCE || strcmp(t->host, n->host) != 0) {
                target_free(t);
                t = NULL;
            }
        }
        if (n->state == NODE_MAINTENANCE)
            continue;
        if (!t && !(t = target_new(n, now)))
            continue; /* out of memory: it is picked up at the next snapshot */
        t->idx = k;
        due[k] = t->in_flight ? NOT_DUE : t->next_due_ms;
        next[k++] = t;
    }
    while (i < P.n_targets)
        target_free(P.targets[i++]);
    free(P.targets);
    free(P.due);
    P.targets = next;
    P.due = due;
    P.n_targets = k;
    P.synced = true;
    P.synced_seq = s ? s->seq : 0;
}

static void start_probe(target *t, int64_t now)
{
    t->started_ms = now;
    char err[KG_REASON_MAX];
    bool id_ok = hostcheck_node_id_valid(t->id);
    if (!id_ok || !netpolicy_host_allowed(netpolicy_curl_policy(), t->host, err, sizeof err)) {
        /* never connected: the reason ("refused: ...") is what the node's card shows */
        probe_result r = {.outcome = PROBE_ERROR, .latency_ms = 0};
        snprintf(r.reason, sizeof r.reason, "%s", id_ok ? err : "invalid node id");
        post_result(t, &r);
        t->last_failed = true;
        t->next_due_ms = now + P.interval_ms;
        P.due[t->idx] = t->next_due_ms;
        return;
    }
    CURL *e = handle_take();
    if (!e)
        return; /* out of memory: still due, tried again at the next wake-up */
    free(t->body);
    t->body = NULL;
    t->body_len = 0;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, t->url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)P.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)P.timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "kumaguard-probe/0.1");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* a fresh connection per probe: a reused one would not notice a node that stopped
     * accepting new connections */
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    /* a health answer is a few hundred bytes: 4 KB instead of 16 KB per probe in flight */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L);
    netpolicy_curl_guard(e, &t->guard);
    if (curl_multi_add_handle(P.multi, e) != CURLM_OK) {
        handle_return(e);
        return;
    }
    t->easy = e;
    t->in_flight = true;
    P.due[t->idx] = NOT_DUE;
}

static void schedule_next(target *t, const kg_snapshot *s)
{
    const kg_node_view *n = s ? snapshot_find_node(s, t->id) : NULL;
    node_state st = n ? n->state : NODE_UNKNOWN;
    /* fast while in transition (health_in_transition, published by the controller) — and from
     * the first failure of a node still online, because the snapshot lags one controller step
     * behind this result, or the first success of one still offline */
    bool fast = !n || n->fast_probe || (t->last_failed && st != NODE_OFFLINE) ||
                (!t->last_failed && st == NODE_OFFLINE);
    if (fast) {
        t->next_due_ms = t->started_ms + P.fast_ms;
    } else {
        int64_t jitter = P.interval_ms >= 10 ? (int64_t)(next_rand() % (uint64_t)(P.interval_ms / 10)) : 0;
        t->next_due_ms = t->started_ms + P.interval_ms + jitter;
    }
}

static void finish_probe(CURLMsg *msg, const kg_snapshot *s)
{
    target *t = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
    if (!t)
        return;
    long status = 0;
    double total = 0;
    /* msg lives in the easy handle: read it before the handle is removed (and maybe freed) */
    CURLcode result = msg->data.result;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
    curl_multi_remove_handle(P.multi, t->easy);
    handle_return(t->easy);
    t->easy = NULL;
    t->in_flight = false;
    probe_result r = probe_classify(result, status, t->body, t->body_len, P.expected,
                                    total * 1000.0);
    if (t->guard.refused) { /* the name resolved to an address the policy refuses */
        r.outcome = PROBE_ERROR;
        snprintf(r.reason, sizeof r.reason, "%s", t->guard.reason);
    }
    t->last_failed = r.outcome != PROBE_OK;
    post_result(t, &r);
    schedule_next(t, s);
    P.due[t->idx] = t->next_due_ms;
}

static void *prober_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&P.stop)) {
        kg_snapshot *s = snapshot_acquire();
        int64_t now = kg_mono_ms();
        sync_targets(s, now);
        bool all = atomic_exchange(&P.trigger_all, false);
        char except[KG_NODE_ID_MAX + 1] = "";
        if (all) {
            pthread_mutex_lock(&except_lock);
            memcpy(except, P.trigger_except, sizeof except);
            P.trigger_except[0] = 0;
            pthread_mutex_unlock(&except_lock);
        }
        for (int i = 0; i < P.n_targets; i++) {
            /* P.due is one small array: the scan costs little however often the loop wakes */
            if (P.due[i] > now && !all)
                continue;
            target *t = P.targets[i];
            bool triggered = all && strcmp(t->id, except) != 0;
            if (!t->in_flight && (triggered || t->next_due_ms <= now))
                start_probe(t, now);
        }
        int running = 0;
        curl_multi_perform(P.multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(P.multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                finish_probe(msg, s);
        snapshot_release(s);
        /* computed after finishing, so a probe rescheduled just now is not overslept */
        int64_t next = now + 200; /* re-read the snapshot at least 5 times a second */
        for (int i = 0; i < P.n_targets; i++)
            if (P.due[i] < next)
                next = P.due[i];
        int64_t wait = next - kg_mono_ms();
        if (wait > 0)
            curl_multi_poll(P.multi, NULL, 0, (int)(wait > 200 ? 200 : wait), NULL);
    }
    return NULL;
}

int prober_start(const kg_config *cfg, char *err, size_t errlen)
{
    P.interval_ms = cfg->health_interval_ms;
    P.fast_ms = cfg->health_fast_interval_ms;
    P.timeout_ms = cfg->health_timeout_ms;
    P.expected = cfg->health_expected_status;
    snprintf(P.path, sizeof P.path, "%s", cfg->health_path);
    P.rng = (uint64_t)kg_mono_ms() * 0x9E3779B97F4A7C15ULL | 1;
    atomic_store(&P.stop, false);
    P.multi = curl_multi_init();
    if (!P.multi) {
        snprintf(err, errlen, "curl_multi_init failed");
        return -1;
    }
    if (pthread_create(&P.thread, NULL, prober_main, NULL) != 0) {
        curl_multi_cleanup(P.multi);
        P.multi = NULL;
        snprintf(err, errlen, "cannot start the prober thread");
        return -1;
    }
    P.started = true;
    return 0;
}

void prober_trigger_others(const char *node)
{
    pthread_mutex_lock(&except_lock);
    snprintf(P.trigger_except, sizeof P.trigger_except, "%s", node ? node : "");
    pthread_mutex_unlock(&except_lock);
    atomic_store(&P.trigger_all, true);
    if (P.multi)
        curl_multi_wakeup(P.multi);
}

void prober_trigger_all(void)
{
    pthread_mutex_lock(&except_lock);
    P.trigger_except[0] = 0;
    pthread_mutex_unlock(&except_lock);
    atomic_store(&P.trigger_all, true);
    if (P.multi)
        curl_multi_wakeup(P.multi);
}

void prober_stop(void)
{
    if (!P.started)
        return;
    atomic_store(&P.stop, true);
    curl_multi_wakeup(P.multi);
    pthread_join(P.thread, NULL);
    for (int i = 0; i < P.n_targets; i++)
        target_free(P.targets[i]);
    while (P.n_idle)
        curl_easy_cleanup(P.idle[--P.n_idle]);
    free(P.targets);
    free(P.due);
    P.targets = NULL;
    P.due = NULL;
    P.n_targets = 0;
    P.synced = false;
    curl_multi_cleanup(P.multi);
    P.multi = NULL;
    P.started = false;
}
