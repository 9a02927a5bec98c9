/* api_sse.c — Server-Sent Events for /api/events (see api_sse.h for the design).
 *
 * Locking, because three parties touch a stream (MHD's reader callback, the hub thread, MHD's
 * free callback) and MHD has locks of its own:
 *   - hub->lock guards the stream list only; nobody calls into MHD while holding it.
 *   - st->lock guards a stream's buffer and its `suspended` flag.  The reader suspends its
 *     connection while holding st->lock, and the hub resumes it under the same lock only when
 *     it sees `suspended`, so a resume never precedes its suspend.  A suspended connection
 *     cannot be closed by MHD, so the hub's resume always reaches a live connection.
 *   - streams are reference counted: the list holds one reference, the hub takes one while it
 *     works on a stream outside hub->lock, and MHD's free callback drops the list's.
 * Owns: the hub thread and the streams.  Must not: block an MHD thread. */
#include "api_sse.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_json.h"
#include "api_route.h"

#define HUB_WAIT_SLICE_MS 100 /* how often the hub thread checks for stop */

typedef struct sse_stream {
    atomic_int refs;
    pthread_mutex_t lock;
    struct MHD_Connection *conn;
    char *buf;           /* pending bytes [off, len) */
    size_t off, len, cap;
    int64_t last_event_id;
    uint64_t last_seq;
    bool suspended;
    bool closing;
    api_client_key client;   /* counted in hub->per_client while linked */
    struct api_sse_hub *hub;
    struct sse_stream *prev, *next; /* hub list, under hub->lock */
} sse_stream;

struct api_sse_hub {
    pthread_mutex_t lock;
    sse_stream *head;
    int n_streams;
    int max_streams;
    int max_per_client;
    api_limits *per_client;     /* streams per client; its own lock, taken after hub->lock */
    atomic_bool stopping;
    pthread_t thread;
    bool thread_started;
};

/* ------------------------------------------------------------------------------------------
 * Frames
 * ------------------------------------------------------------------------------------------ */

int api_sse_format_event(const kg_event *e, char *buf, size_t len)
{
    json_object *o = api_json_event(e);
    if (!o)
        return -1;
    size_t jlen = 0;
    const char *js = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &jlen);
    /* json-c escapes newlines inside strings, so the JSON is one line: one data: field. */
    int n = js ? snprintf(buf, len, "id: %lld\ndata: %s\n\n", (long long)e->id, js) : -1;
    json_object_put(o);
    if (n < 0 || (size_t)n >= len)
        return -1;
    return n;
}

static int format_snapshot_notice(const kg_snapshot *s, char *buf, size_t len)
{
    char t[40];
    api_format_time(s->built_ms, t, sizeof t);
    int n = snprintf(buf, len,
                     "event: snapshot\ndata: {\"seq\":%llu,\"generated_at\":\"%s\","
                     "\"status\":\"%s\"}\n\n",
                     (unsigned long long)s->seq, t, api_cluster_status(s));
    return (n < 0 || (size_t)n >= len) ? -1 : n;
}

/* Appends under st->lock.  Marks the stream closing when the client is too far behind. */
static void stream_append(sse_stream *st, const char *data, size_t n)
{
    if (st->closing)
        return;
    if (st->off > 0 && st->off == st->len)
        st->off = st->len = 0;
    if (st->len - st->off + n > API_SSE_MAX_PENDING) {
        st->closing = true;
        return;
    }
    if (st->len + n > st->cap) {
        /* compact first, then grow */
        if (st->off > 0) {
            memmove(st->buf, st->buf + st->off, st->len - st->off);
            st->len -= st->off;
            st->off = 0;
        }
        if (st->len + n > st->cap) {
            size_t ncap = st->cap ? st->cap : 4096;
            while (ncap < st->len + n)
                ncap *= 2;
            char *nb = realloc(st->buf, ncap);
            if (!nb) {
                st->closing = true;
                return;
            }
            st->buf = nb;
            st->cap = ncap;
        }
    }
    memcpy(st->buf + st->len, data, n);
    st->len += n;
}

/* Appends the events of s newer than the stream's last id, and optionally a snapshot notice.
 * Under st->lock. */
static void stream_catch_up(sse_stream *st, const kg_snapshot *s, bool notice)
{
    char frame[API_SSE_FRAME_MAX]; /* worst case: every text byte escaped as \\u00XX */
    for (int i = 0; i < s->n_recent_events; i++) {
        const kg_event *e = &s->recent_events[i];
        if (e->id <= st->last_event_id)
            continue;
        int n = api_sse_format_event(e, frame, sizeof frame);
        if (n > 0)
            stream_append(st, frame, (size_t)n);
        st->last_event_id = e->id;
    }
    if (notice && s->seq != st->last_seq) {
        int n = format_snapshot_notice(s, frame, sizeof frame);
        if (n > 0)
            stream_append(st, frame, (size_t)n);
    }
    st->last_seq = s->seq;
}

/* Under st->lock: wake the connection if its reader is parked. */
static void stream_wake(sse_stream *st)
{
    if (st->suspended) {
        st->suspended = false;
        MHD_resume_connection(st->conn);
    }
}

static void stream_put(sse_stream *st)
{
    if (atomic_fetch_sub(&st->refs, 1) == 1) {
        pthread_mutex_destroy(&st->lock);
        free(st->buf);
        free(st);
    }
}

/* ------------------------------------------------------------------------------------------
 * MHD callbacks
 * ------------------------------------------------------------------------------------------ */

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    sse_stream *st = cls;
    ssize_t rc;
    pthread_mutex_lock(&st->lock);
    if (st->off < st->len) {
        size_t n = st->len - st->off;
        if (n > max)
            n = max;
        memcpy(out, st->buf + st->off, n);
        st->off += n;
        rc = (ssize_t)n;
    } else if (st->closing) {
        rc = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: park the connection; the hub resumes it (see the file comment). */
        st->suspended = true;
        MHD_suspend_connection(st->conn);
        rc = 0;
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static void stream_free_cb(void *cls)
{
    sse_stream *st = cls;
    api_sse_hub *h = st->hub;
    pthread_mutex_lock(&h->lock);
    if (st->prev)
        st->prev->next = st->next;
    else
        h->head = st->next;
    if (st->next)
        st->next->prev = st->prev;
    h->n_streams--;
    api_limits_release(h->per_client, &st->client);
    pthread_mutex_unlock(&h->lock);
    stream_put(st);
}

/* ------------------------------------------------------------------------------------------
 * Hub
 * ------------------------------------------------------------------------------------------ */

/* Copies the stream list with a reference each, so the caller can work without hub->lock. */
static int take_streams(api_sse_hub *h, sse_stream ***out)
{
    pthread_mutex_lock(&h->lock);
    int n = 0;
    sse_stream **arr = h->n_streams > 0 ? calloc((size_t)h->n_streams, sizeof *arr) : NULL;
    if (arr) {
        for (sse_stream *st = h->head; st && n < h->n_streams; st = st->next) {
            atomic_fetch_add(&st->refs, 1);
            arr[n++] = st;
        }
    }
    pthread_mutex_unlock(&h->lock);
    *out = arr;
    return n;
}

static void hub_broadcast(api_sse_hub *h, const kg_snapshot *s, bool heartbeat)
{
    sse_stream **arr = NULL;
    int n = take_streams(h, &arr);
    for (int i = 0; i < n; i++) {
        sse_stream *st = arr[i];
        pthread_mutex_lock(&st->lock);
        if (s)
            stream_catch_up(st, s, true);
        if (heartbeat)
            stream_append(st, ": keep-alive\n\n", 14);
        if (st->off < st->len || st->closing)
            stream_wake(st);
        pthread_mutex_unlock(&st->lock);
        stream_put(st);
    }
    free(arr);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *hub_main(void *arg)
{
    api_sse_hub *h = arg;
    kg_snapshot *cur = snapshot_acquire();
    uint64_t seq = cur ? cur->seq : 0;
    snapshot_release(cur);
    int64_t last_sent = mono_ms();
    while (!atomic_load(&h->stopping)) {
        int64_t t0 = mono_ms();
        kg_snapshot *s = snapshot_wait_newer(seq, HUB_WAIT_SLICE_MS);
        if (!s && mono_ms() - t0 < HUB_WAIT_SLICE_MS / 2) {
            /* snapshot_shutdown() was called: waits return at once; do not spin */
            struct timespec ts = {0, HUB_WAIT_SLICE_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (atomic_load(&h->stopping)) {
            snapshot_release(s);
            break;
        }
        if (s) {
            seq = s->seq;
            hub_broadcast(h, s, false);
            snapshot_release(s);
            last_sent = mono_ms();
        } else if (mono_ms() - last_sent >= API_SSE_HEARTBEAT_MS) {
            /* Heartbeats also resume parked connections whose client went away, so MHD
             * notices the dead socket and frees it. */
            hub_broadcast(h, NULL, true);
            last_sent = mono_ms();
        }
    }
    return NULL;
}

api_sse_hub *api_sse_start(int max_streams, int max_per_client, char *err, size_t errlen)
{
    api_sse_hub *h = calloc(1, sizeof *h);
    if (!h || !(h->per_client = api_limits_new())) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    h->max_streams = max_streams > 0 ? max_streams : API_SSE_MAX_STREAMS;
    h->max_per_client = max_per_client > 0 ? max_per_client : h->max_streams;
    atomic_init(&h->stopping, false);
    if (pthread_create(&h->thread, NULL, hub_main, h) != 0) {
        snprintf(err, errlen, "cannot start the event-stream thread");
        pthread_mutex_destroy(&h->lock);
        api_limits_free(h->per_client);
        free(h);
        return NULL;
    }
    h->thread_started = true;
    return h;
}

void api_sse_stop(api_sse_hub *h)
{
    if (!h)
        return;
    atomic_store(&h->stopping, true);
    if (h->thread_started) {
        pthread_join(h->thread, NULL);
        h->thread_started = false;
    }
    sse_stream **arr = NULL;
    int n = take_streams(h, &arr);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&arr[i]->lock);
        arr[i]->closing = true;
        stream_wake(arr[i]);
        pthread_mutex_unlock(&arr[i]->lock);
        stream_put(arr[i]);
    }
    free(arr);
}

void api_sse_free(api_sse_hub *h)
{
    if (!h)
        return;
    /* MHD_stop_daemon has destroyed every response, so the list is empty by now. */
    pthread_mutex_destroy(&h->lock);
    api_limits_free(h->per_client);
    free(h);
}

struct MHD_Response *api_sse_open(api_sse_hub *h, struct MHD_Connection *c,
                                  const api_client_key *client, const char *last_event_id,
                                  int *http_status)
{
    *http_status = 503;
    if (atomic_load(&h->stopping))
        return NULL;
    sse_stream *st = calloc(1, sizeof *st);
    if (!st) {
        *http_status = 500;
        return NULL;
    }
    atomic_init(&st->refs, 1); /* the list's reference, dropped by stream_free_cb */
    pthread_mutex_init(&st->lock, NULL);
    st->conn = c;
    st->hub = h;
    st->client = *client;

    kg_snapshot *s = snapshot_acquire();
    int64_t resume_after = -1;
    if (last_event_id && *last_event_id) {
        int64_t v;
        if (api_parse_int64(last_event_id, 0, INT64_MAX, &v) == 0)
            resume_after = v;
    }
    /* Without Last-Event-ID a client sees only what happens from now on. */
    st->last_event_id = resume_after >= 0 ? resume_after
                        : (s && s->n_recent_events > 0
                               ? s->recent_events[s->n_recent_events - 1].id
                               : 0);
    static const char hello[] = "retry: 3000\n\n";
    stream_append(st, hello, sizeof hello - 1);
    if (s) {
        stream_catch_up(st, s, true);
        snapshot_release(s);
    }

    /* Take a slot first, so a refused stream never reaches MHD.  The client's own cap comes
     * first: one client must not be able to take every slot. */
    pthread_mutex_lock(&h->lock);
    bool full = h->n_streams >= h->max_streams || atomic_load(&h->stopping);
    if (!full && !api_limits_acquire(h->per_client, client, h->max_per_client)) {
        full = true;
        *http_status = 429;
    }
    if (!full) {
        st->next = h->head;
        if (h->head)
            h->head->prev = st;
        h->head = st;
        h->n_streams++;
    }
    pthread_mutex_unlock(&h->lock);
    if (full) {
        stream_put(st);
        return NULL;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free_cb);
    if (!resp) {
        stream_free_cb(st); /* unlinks and drops the list's reference */
        *http_status = 500;
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* nginx: do not buffer */
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    return resp;
}
