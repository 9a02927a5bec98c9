/* webhook.c — event notifications to HTTP endpoints (see webhook.h for the contract).
 *
 * Shared under H.lock: every sink's queue, counters and the stop flag.  A sink thread holds
 * the lock only to take the head of its queue and to record the outcome, never while the HTTP
 * request runs, so webhook_submit() (the controller) waits for nothing but a memcpy.
 * Owns: the sink threads, their curl handles and queues.  Must not: block webhook_submit(),
 * or let a URL path or a secret reach a log line or a status. */
#include "webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api_json.h"
#include "kg_clock.h"
#include "log.h"

#define RESPONSE_KEEP 512 /* bytes of a refusal's body kept for the error text */

typedef struct {
    kg_event ev;
    int64_t queued_mono_ms; /* the retry window counts from here */
    int attempts;
} wh_item;

typedef struct {
    int index;               /* 1-based, as in the settings (KUMAGUARD_WEBHOOK2_URL = 2) */
    char *url;
    char *secret;
    pthread_t thread;
    bool started;
    wh_item *q;              /* ring of cap items from head */
    int cap, head, n;
    int64_t next_attempt_mono_ms;
    webhook_sink_status st;
} wh_sink;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* CLOCK_MONOTONIC; signalled on submit and on stop */
    bool stop;
    bool cond_ready;
    wh_sink sinks[KG_WEBHOOK_SINKS];
    int n_sinks;
    int timeout_ms;
    int window_ms;
    char instance[128];
} H = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ------------------------------------------------------------------------------------------
 * Pure helpers
 * ------------------------------------------------------------------------------------------ */

int webhook_parse_format(const char *s, webhook_format *out)
{
    static const char *const names[] = {"json", "slack", "discord"};
    for (int i = 0; i < 3; i++)
        if (s && strcasecmp(s, names[i]) == 0) {
            *out = (webhook_format)i;
            return 0;
        }
    return -1;
}

const char *webhook_format_name(webhook_format f)
{
    return f == WEBHOOK_SLACK ? "slack" : f == WEBHOOK_DISCORD ? "discord" : "json";
}

int webhook_parse_kinds(const char *s, uint32_t *mask, char *err, size_t errlen)
{
    *mask = 0;
    if (!s || !*s) {
        snprintf(err, errlen, "no event kinds");
        return -1;
    }
    if (strcasecmp(s, "all") == 0) {
        *mask = (1u << EV_KIND_COUNT) - 1;
        return 0;
    }
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        char name[40];
        if (len == 0 || len >= sizeof name) {
            snprintf(err, errlen, "empty or overlong event kind in '%.60s'", s);
            return -1;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        int k = event_kind_parse(name);
        if (k < 0) {
            snprintf(err, errlen, "unknown event kind '%s'", name);
            return -1;
        }
        *mask |= 1u << k;
        p += end ? (size_t)(end - p) + 1 : strlen(p);
    }
    return 0;
}

int webhook_parse_url(const char *url, char *target, size_t tlen, char *err, size_t errlen)
{
    const char *rest = NULL;
    if (url && strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (url && strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    size_t host_len = rest ? strcspn(rest, "/?#") : 0;
    if (!rest || host_len == 0 || strpbrk(url, " \t\r\n")) {
        snprintf(err, errlen, "expected an http:// or https:// URL");
        return -1;
    }
    /* credentials in the authority (user:pass@host) never reach the target text */
    const char *at = memchr(rest, '@', host_len);
    const char *host = at ? at + 1 : rest;
    size_t shown = host_len - (size_t)(host - rest);
    if (shown == 0) {
        snprintf(err, errlen, "expected a host in the URL");
        return -1;
    }
    snprintf(target, tlen, "%.*s%.*s", (int)(rest - url), url, (int)shown, host);
    return 0;
}

int64_t webhook_backoff_ms(int attempt)
{
    int64_t d = 1000;
    for (int i = 1; i < attempt && d < KG_WEBHOOK_BACKOFF_MAX_MS; i++)
        d *= 2;
    return d < KG_WEBHOOK_BACKOFF_MAX_MS ? d : KG_WEBHOOK_BACKOFF_MAX_MS;
}

/* One line for chat formats: what, where, how many, why. */
static void summary(const kg_event *ev, const char *instance, char *out, size_t len)
{
    char fromto[KG_NODE_ID_MAX * 2 + 8] = "";
    if (ev->from[0] || ev->to[0])
        snprintf(fromto, sizeof fromto, " %s → %s", ev->from[0] ? ev->from : "?",
                 ev->to[0] ? ev->to : "?");
    char count[32] = "";
    if (ev->count)
        snprintf(count, sizeof count, " (%d monitors)", ev->count);
    snprintf(out, len, "[kumaguard %s] %s%s%s%s%s: %s", instance, event_kind_name(ev->kind),
             ev->node[0] ? " " : "", ev->node, fromto, count, ev->reason);
}

char *webhook_body(webhook_format f, const kg_event *ev, const char *instance, size_t *len)
{
    char text[512];
    summary(ev, instance ? instance : "", text, sizeof text);
    json_object *o;
    if (f == WEBHOOK_SLACK) {
        o = json_object_new_object();
        json_object_object_add(o, "text", json_object_new_string(text));
    } else if (f == WEBHOOK_DISCORD) {
        o = json_object_new_object();
        json_object_object_add(o, "content", json_object_new_string(text));
    } else {
        o = api_json_event(ev);
        json_object_object_add(o, "timestamp", json_object_new_int64(ev->ts_ms / 1000));
        json_object_object_add(o, "source", json_object_new_string("kumaguard"));
        json_object_object_add(o, "instance", json_object_new_string(instance ? instance : ""));
        json_object_object_add(o, "text", json_object_new_string(text));
    }
    char *body = o ? api_json_dump(o, len) : NULL;
    json_object_put(o);
    return body;
}

void webhook_signature(const char *secret, const char *timestamp, const char *body, size_t len,
                       char hex[65])
{
    size_t tl = strlen(timestamp);
    unsigned char *msg = malloc(tl + 1 + len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    hex[0] = '\0';
    if (!msg)
        return;
    memcpy(msg, timestamp, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, tl + 1 + len, mac, &mac_len)) {
        for (unsigned int i = 0; i < mac_len && i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    }
    free(msg);
}

/* ------------------------------------------------------------------------------------------
 * Queue (under H.lock)
 * ------------------------------------------------------------------------------------------ */

static wh_item *item_at(wh_sink *k, int i)
{
    return &k->q[(k->head + i) % k->cap];
}

static void pop_head(wh_sink *k)
{
    k->head = (k->head + 1) % k->cap;
    k->n--;
    k->next_attempt_mono_ms = 0;
}

/* A full queue drops its oldest event that is not being delivered (the head may be). */
static void drop_oldest_waiting(wh_sink *k)
{
    if (k->n < 2) {
        pop_head(k);
    } else {
        for (int i = 1; i + 1 < k->n; i++)
            *item_at(k, i) = *item_at(k, i + 1);
        k->n--;
    }
    k->st.dropped++;
}

_Static_assert(EV_KIND_COUNT <= 32, "event kinds must fit the sinks' 32-bit kind masks");

void webhook_submit(const kg_event *ev)
{
    if (ev->kind < 0 || ev->kind >= EV_KIND_COUNT)
        return;
    int64_t now = kg_mono_ms();
    bool any = false;
    pthread_mutex_lock(&H.lock);
    for (int s = 0; s < H.n_sinks && !H.stop; s++) {
        wh_sink *k = &H.sinks[s];
        if (!(k->st.kinds & (1u << ev->kind)))
            continue;
        if (k->n == k->cap)
            drop_oldest_waiting(k);
        wh_item *it = item_at(k, k->n++);
        it->ev = *ev;
        it->queued_mono_ms = now;
        it->attempts = 0;
        any = true;
    }
    if (any)
        pthread_cond_broadcast(&H.cond);
    pthread_mutex_unlock(&H.lock);
}

int webhook_status(webhook_sink_status *out, int max)
{
    pthread_mutex_lock(&H.lock);
    int n = H.n_sinks < max ? H.n_sinks : max;
    for (int i = 0; i < n; i++) {
        out[i] = H.sinks[i].st;
        out[i].queued = H.sinks[i].n;
    }
    pthread_mutex_unlock(&H.lock);
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Delivery (sink threads, without the lock)
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    char buf[RESPONSE_KEEP + 1];
    size_t len;
} response;

static size_t keep_response(char *d, size_t s, size_t n, void *u)
{
    response *r = u;
    size_t add = s * n;
    size_t room = RESPONSE_KEEP - r->len;
    size_t take = add < room ? add : room;
    memcpy(r->buf + r->len, d, take);
    r->len += take;
    r->buf[r->len] = '\0';
    return add;
}

/* Aborts a request in flight when kumaguard stops (a hanging receiver must not hold it up). */
static int abort_on_stop(void *u, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)u;
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    pthread_mutex_lock(&H.lock);
    bool stop = H.stop;
    pthread_mutex_unlock(&H.lock);
    return stop ? 1 : 0;
}

/* One POST.  Returns true on 2xx; otherwise err says why. */
static bool deliver(CURL *h, const wh_sink *k, const kg_event *ev, char *err, size_t errlen)
{
    size_t len = 0;
    char *body = webhook_body(k->st.format, ev, H.instance, &len);
    if (!body) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    char ts[24], line[128];
    snprintf(ts, sizeof ts, "%lld", (long long)(kg_wall_ms() / 1000));
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "User-Agent: kumaguard-webhook/1");
    snprintf(line, sizeof line, "X-Kumaguard-Event: %s", event_kind_name(ev->kind));
    hdr = curl_slist_append(hdr, line);
    snprintf(line, sizeof line, "X-Kumaguard-Delivery: %lld", (long long)ev->id);
    hdr = curl_slist_append(hdr, line);
    snprintf(line, sizeof line, "X-Kumaguard-Timestamp: %s", ts);
    hdr = curl_slist_append(hdr, line);
    if (k->secret) {
        char hex[65];
        webhook_signature(k->secret, ts, body, len, hex);
        snprintf(line, sizeof line, "X-Kumaguard-Signature: sha256=%s", hex);
        hdr = curl_slist_append(hdr, line);
    }
    response resp = {.len = 0};
    resp.buf[0] = '\0';
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, k->url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)H.timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_response);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, abort_on_stop);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    free(body);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s", curl_easy_strerror(rc));
        return false;
    }
    if (status < 200 || status > 299) {
        for (size_t i = 0; i < resp.len; i++) /* one printable line in the status */
            if ((unsigned char)resp.buf[i] < 0x20)
                resp.buf[i] = ' ';
        snprintf(err, errlen, "HTTP %ld%s%.100s", status, resp.len ? ": " : "", resp.buf);
        return false;
    }
    return true;
}

static void wait_until(int64_t due_mono_ms)
{
    int64_t wait = due_mono_ms > 0 ? due_mono_ms - kg_mono_ms() : 60000;
    if (wait <= 0)
        return;
    struct timespec dl = kg_deadline_in(wait);
    pthread_cond_timedwait(&H.cond, &H.lock, &dl);
}

/* Records the outcome of delivering `sent` (which may have been dropped from a full queue
 * meanwhile: then only the counters change). */
static void record(wh_sink *k, const wh_item *sent, bool ok, const char *err)
{
    bool still_head = k->n > 0 && item_at(k, 0)->ev.id == sent->ev.id &&
                      item_at(k, 0)->queued_mono_ms == sent->queued_mono_ms;
    if (ok) {
        k->st.delivered++;
        k->st.last_success_ms = kg_wall_ms();
        if (k->st.last_error[0])
            log_info("webhook %d (%s): delivering again", k->index, k->st.target);
        k->st.last_error[0] = '\0';
        if (still_head)
            pop_head(k);
        return;
    }
    k->st.failures++;
    k->st.last_failure_ms = kg_wall_ms();
    if (!k->st.last_error[0])
        log_warn("webhook %d (%s): delivery failed: %s (retrying)", k->index, k->st.target, err);
    snprintf(k->st.last_error, sizeof k->st.last_error, "%s", err);
    if (!still_head)
        return;
    wh_item *head = item_at(k, 0);
    head->attempts++;
    if (kg_mono_ms() - head->queued_mono_ms > H.window_ms) {
        /* failing since longer than the retry window: let the next event go */
        k->st.given_up++;
        log_warn("webhook %d (%s): gave up event %lld (%s) after %d attempts: %s", k->index,
                 k->st.target, (long long)head->ev.id, event_kind_name(head->ev.kind),
                 head->attempts, err);
        pop_head(k);
        return;
    }
    k->next_attempt_mono_ms = kg_mono_ms() + webhook_backoff_ms(head->attempts);
}

static void *sink_main(void *arg)
{
    wh_sink *k = arg;
    CURL *h = curl_easy_init();
    pthread_mutex_lock(&H.lock);
    while (!H.stop) {
        if (k->n == 0 || (k->next_attempt_mono_ms && kg_mono_ms() < k->next_attempt_mono_ms)) {
            wait_until(k->n ? k->next_attempt_mono_ms : 0);
            continue;
        }
        wh_item it = *item_at(k, 0);
        if (it.attempts > 0)
            k->st.retries++;
        pthread_mutex_unlock(&H.lock);
        char err[160] = "no curl handle";
        bool ok = h && deliver(h, k, &it.ev, err, sizeof err);
        log_debug("webhook %d: event %lld (%s) %s", k->index, (long long)it.ev.id,
                  event_kind_name(it.ev.kind), ok ? "delivered" : err);
        pthread_mutex_lock(&H.lock);
        record(k, &it, ok, err);
    }
    if (k->n)
        log_warn("webhook %d (%s): %d undelivered events dropped at shutdown", k->index,
                 k->st.target, k->n);
    pthread_mutex_unlock(&H.lock);
    if (h)
        curl_easy_cleanup(h);
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Start and stop
 * ------------------------------------------------------------------------------------------ */

static int add_sink(int index, const char *url, const char *secret, const char *events,
                    const char *format, int queue, char *err, size_t errlen)
{
    wh_sink *k = &H.sinks[H.n_sinks];
    memset(k, 0, sizeof *k);
    k->index = index;
    char why[128];
    if (webhook_parse_url(url, k->st.target, sizeof k->st.target, why, sizeof why) != 0 ||
        webhook_parse_kinds(events ? events : KG_WEBHOOK_DEFAULT_EVENTS, &k->st.kinds, why,
                            sizeof why) != 0 ||
        webhook_parse_format(format ? format : "json", &k->st.format) != 0) {
        snprintf(err, errlen, "webhook %d: %s", index, why);
        return -1;
    }
    k->url = strdup(url);
    k->secret = secret && *secret ? strdup(secret) : NULL;
    k->cap = queue > 0 ? queue : 1000;
    k->q = calloc((size_t)k->cap, sizeof *k->q);
    if (!k->url || !k->q || (secret && *secret && !k->secret)) {
        free(k->url);
        free(k->secret);
        free(k->q);
        snprintf(err, errlen, "webhook %d: out of memory", index);
        return -1;
    }
    k->st.enabled = true;
    k->st.signed_ = k->secret != NULL;
    H.n_sinks++;
    return 0;
}

static void free_sinks(void)
{
    for (int i = 0; i < H.n_sinks; i++) {
        wh_sink *k = &H.sinks[i];
        free(k->url);
        if (k->secret) {
            volatile char *p = k->secret; /* wipe: the compiler may not drop it */
            while (*p)
                *p++ = '\0';
        }
        free(k->secret);
        free(k->q);
    }
    H.n_sinks = 0;
}

int webhook_start(const kg_config *cfg, char *err, size_t errlen)
{
    H.stop = false;
    H.n_sinks = 0;
    H.timeout_ms = cfg->webhook_timeout_ms > 0 ? cfg->webhook_timeout_ms : 5000;
    H.window_ms = cfg->webhook_retry_window_ms > 0 ? cfg->webhook_retry_window_ms : 900000;
    snprintf(H.instance, sizeof H.instance, "%s", cfg->instance_id ? cfg->instance_id : "");
    if (cfg->webhook_url && *cfg->webhook_url &&
        add_sink(1, cfg->webhook_url, cfg->webhook_secret, cfg->webhook_events,
                 cfg->webhook_format, cfg->webhook_queue, err, errlen) != 0)
        goto fail;
    if (cfg->webhook2_url && *cfg->webhook2_url &&
        add_sink(2, cfg->webhook2_url, cfg->webhook2_secret, cfg->webhook2_events,
                 cfg->webhook2_format, cfg->webhook_queue, err, errlen) != 0)
        goto fail;
    if (H.n_sinks == 0)
        return 0;
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&H.cond, &a);
    pthread_condattr_destroy(&a);
    H.cond_ready = true;
    for (int i = 0; i < H.n_sinks; i++) {
        wh_sink *k = &H.sinks[i];
        if (pthread_create(&k->thread, NULL, sink_main, k) != 0) {
            snprintf(err, errlen, "cannot start the webhook thread: %s", strerror(errno));
            webhook_stop();
            return -1;
        }
        k->started = true;
        log_info("webhook %d: %s, format %s, %s", k->index, k->st.target,
                 webhook_format_name(k->st.format), k->secret ? "signed" : "unsigned");
    }
    return 0;
fail:
    free_sinks();
    return -1;
}

void webhook_stop(void)
{
    if (!H.cond_ready) {
        free_sinks();
        return;
    }
    pthread_mutex_lock(&H.lock);
    H.stop = true;
    pthread_cond_broadcast(&H.cond);
    pthread_mutex_unlock(&H.lock);
    for (int i = 0; i < H.n_sinks; i++)
        if (H.sinks[i].started)
            pthread_join(H.sinks[i].thread, NULL);
    pthread_mutex_lock(&H.lock);
    free_sinks();
    pthread_mutex_unlock(&H.lock);
    pthread_cond_destroy(&H.cond);
    H.cond_ready = false;
}
