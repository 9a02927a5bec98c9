/* reconcile.c — the reconcile applier thread (see reconcile.h).
 *
 * Shared with the controller, under R.lock: the queue of calls to start and the stop flag.
 * Everything curl is touched by this thread only.  Must not: block the caller of
 * reconcile_worker_call beyond a queue append, or hold R.lock while curl works. */
#include "reconcile.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "mailbox.h"
#include "netpolicy_curl.h"
#include "types.h"

typedef struct call {
    char node[KG_NODE_ID_MAX + 1];
    char host[KG_HOST_MAX + 1];
    int64_t deadline_ms;
    int64_t started_ms;
    CURL *easy;
    netpolicy_guard guard;   /* the key never leaves for an address the policy refuses */
    struct call *next;
} call;

static struct {
    pthread_mutex_t lock;
    pthread_t thread;
    bool started;
    bool stop;
    call *queue;           /* to start, under lock */
    call *running;         /* in flight, worker thread only */
    CURLM *multi;
    struct curl_slist *headers;
    char path[256];
} R = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t discard(char *d, size_t s, size_t n, void *u)
{
    (void)d;
    (void)u;
    return s * n;
}

rsched_result reconcile_classify(int curl_code, long http_status)
{
    switch ((CURLcode)curl_code) {
    case CURLE_OK:
        break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return RS_CONNECT_FAILED; /* never reached the node: nothing runs there */
    default:
        /* timeout, reset, empty answer: the request may have been received and may still be
         * running on the node */
        return RS_TIMEOUT;
    }
    if (http_status >= 200 && http_status <= 299)
        return RS_OK;
    if (http_status == 429)
        return RS_RATE_LIMITED;
    if (http_status == 401 || http_status == 403)
        return RS_UNAUTHORIZED;
    return RS_HTTP_ERROR;
}

static void post_outcome(const call *c, rsched_result r, long status, const char *error)
{
    kg_msg m = {.kind = MSG_RECONCILE_DONE, .status = (int)r, .http_status = (int)status,
                .value = (double)(kg_mono_ms() - c->started_ms)};
    snprintf(m.node, sizeof m.node, "%s", c->node);
    snprintf(m.text, sizeof m.text, "%s", error ? error : "");
    mailbox_post(&m);
}

static void start_call(call *c)
{
    char url[KG_HOST_MAX + 300];
    snprintf(url, sizeof url, "http://%s%s", c->host, R.path);
    c->started_ms = kg_mono_ms();
    c->next = NULL;
    c->easy = curl_easy_init();
    if (!c->easy) {
        post_outcome(c, RS_CONNECT_FAILED, 0, "curl init failed");
        free(c);
        return;
    }
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, R.headers);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, (long)(c->deadline_ms > 0 ? c->deadline_ms : 1));
    curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c->easy, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c->easy, CURLOPT_USERAGENT, "kumaguard-reconcile/0.2");
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    /* A failover over 999 survivors sends 999 calls at once: with curl's 16 KB receive buffer
     * per handle, and every connection then kept in the multi handle's cache, a burst left
     * tens of megabytes behind.  The answer is a few bytes and is discarded; calls to one
     * node are seconds apart at least, so a kept connection saves nothing. */
    curl_easy_setopt(c->easy, CURLOPT_BUFFERSIZE, 1024L);
    curl_easy_setopt(c->easy, CURLOPT_FORBID_REUSE, 1L);
    netpolicy_curl_guard(c->easy, &c->guard);
    if (curl_multi_add_handle(R.multi, c->easy) != CURLM_OK) {
        post_outcome(c, RS_CONNECT_FAILED, 0, "curl_multi_add_handle failed");
        curl_easy_cleanup(c->easy);
        free(c);
        return;
    }
    c->next = R.running;
    R.running = c;
}

static void unlink_running(call *c)
{
    for (call **p = &R.running; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            return;
        }
}

static void finish_call(CURLMsg *msg)
{
    call *c = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
    long status = 0;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
    rsched_result r = reconcile_classify(msg->data.result, status);
    char error[96] = "";
    if (c->guard.refused) {
        r = RS_CONNECT_FAILED; /* no socket was opened: nothing was sent */
        snprintf(error, sizeof error, "%.95s", c->guard.reason);
    } else if (msg->data.result != CURLE_OK)
        snprintf(error, sizeof error, "%s", curl_easy_strerror(msg->data.result));
    else if (r != RS_OK)
        snprintf(error, sizeof error, "HTTP %ld", status);
    curl_multi_remove_handle(R.multi, c->easy);
    curl_easy_cleanup(c->easy);
    unlink_running(c);
    post_outcome(c, r, status, error);
    free(c);
}

static void *worker_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&R.lock);
        bool stop = R.stop;
        call *q = R.queue;
        R.queue = NULL;
        pthread_mutex_unlock(&R.lock);
        if (stop) {
            while (q) {
                call *next = q->next;
                free(q);
                q = next;
            }
            break;
        }
        while (q) {
            call *next = q->next;
            start_call(q);
            q = next;
        }
        int running = 0;
        curl_multi_perform(R.multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(R.multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                finish_call(msg);
        curl_multi_poll(R.multi, NULL, 0, 1000, NULL);
    }
    /* abandon what is still in flight: the nodes may still run it; the controller stops
     * with us, so nobody waits for these outcomes */
    while (R.running) {
        call *c = R.running;
        R.running = c->next;
        curl_multi_remove_handle(R.multi, c->easy);
        curl_easy_cleanup(c->easy);
        free(c);
    }
    return NULL;
}

int reconcile_worker_start(const kg_config *cfg, char *err, size_t errlen)
{
    snprintf(R.path, sizeof R.path, "%s", cfg->reconcile_path);
    R.multi = curl_multi_init();
    char auth[1100];
    snprintf(auth, sizeof auth, "Authorization: %s", cfg->kuma_api_key ? cfg->kuma_api_key : "");
    R.headers = curl_slist_append(NULL, auth);
    if (R.headers)
        R.headers = curl_slist_append(R.headers, "Content-Type: application/json");
    if (!R.multi || !R.headers) {
        snprintf(err, errlen, "reconcile worker: out of memory");
        goto fail;
    }
    R.stop = false;
    if (pthread_create(&R.thread, NULL, worker_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the reconcile thread: %s", strerror(errno));
        goto fail;
    }
    R.started = true;
    return 0;
fail:
    if (R.multi)
        curl_multi_cleanup(R.multi);
    curl_slist_free_all(R.headers);
    R.multi = NULL;
    R.headers = NULL;
    return -1;
}

int reconcile_worker_call(const char *node, const char *host, int64_t deadline_ms)
{
    call *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    snprintf(c->node, sizeof c->node, "%s", node);
    snprintf(c->host, sizeof c->host, "%s", host);
    c->deadline_ms = deadline_ms;
    pthread_mutex_lock(&R.lock);
    if (!R.started || R.stop) {
        pthread_mutex_unlock(&R.lock);
        free(c);
        return -1;
    }
    /* append, so calls start in the order they were decided */
    call **p = &R.queue;
    while (*p)
        p = &(*p)->next;
    *p = c;
    pthread_mutex_unlock(&R.lock);
    curl_multi_wakeup(R.multi);
    return 0;
}

void reconcile_worker_stop(void)
{
    if (!R.started)
        return;
    pthread_mutex_lock(&R.lock);
    R.stop = true;
    pthread_mutex_unlock(&R.lock);
    curl_multi_wakeup(R.multi);
    pthread_join(R.thread, NULL);
    curl_multi_cleanup(R.multi);
    curl_slist_free_all(R.headers);
    R.multi = NULL;
    R.headers = NULL;
    R.started = false;
}
