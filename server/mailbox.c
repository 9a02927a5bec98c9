/* mailbox.c — the controller's inbound queue and the reply objects senders wait on
 * (see mailbox.h for the threading contract).
 *
 * Owns: the FIFO, its lock and condition variable.  Must not: look inside messages. */
#include "mailbox.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

static pthread_mutex_t mb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mb_cond;
static pthread_once_t mb_once = PTHREAD_ONCE_INIT;

/* Timed waits use CLOCK_MONOTONIC so a wall-clock step cannot stretch or cut a wait. */
static void mb_init(void) { kg_cond_init(&mb_cond); }
static kg_msg *head, *tail;
static bool closed;


int mailbox_post(const kg_msg *m)
{
    pthread_once(&mb_once, mb_init);
    kg_msg *copy = malloc(sizeof *copy);
    if (!copy)
        return -1;
    *copy = *m; /* on success the copy owns m->data (the caller must not free it) */
    copy->next = NULL;
    pthread_mutex_lock(&mb_lock);
    if (closed) {
        pthread_mutex_unlock(&mb_lock);
        free(copy);
        return -1;
    }
    if (copy->reply) {
        pthread_mutex_lock(&copy->reply->lock);
        copy->reply->refs++;
        pthread_mutex_unlock(&copy->reply->lock);
    }
    if (tail)
        tail->next = copy;
    else
        head = copy;
    tail = copy;
    pthread_cond_signal(&mb_cond);
    pthread_mutex_unlock(&mb_lock);
    return 0;
}

kg_msg *mailbox_wait(int timeout_ms)
{
    pthread_once(&mb_once, mb_init);
    struct timespec deadline = kg_deadline_in(timeout_ms);
    pthread_mutex_lock(&mb_lock);
    while (!head && !closed) {
        if (pthread_cond_timedwait(&mb_cond, &mb_lock, &deadline) == ETIMEDOUT)
            break;
    }
    kg_msg *m = head;
    if (m) {
        head = m->next;
        if (!head)
            tail = NULL;
        m->next = NULL;
    }
    pthread_mutex_unlock(&mb_lock);
    return m;
}

void mailbox_free(kg_msg *m)
{
    if (!m)
        return;
    if (m->reply)
        reply_put(m->reply);
    if (m->data && m->data_free)
        m->data_free(m->data);
    free(m);
}

void mailbox_shutdown(void)
{
    pthread_once(&mb_once, mb_init);
    pthread_mutex_lock(&mb_lock);
    closed = true;
    pthread_cond_broadcast(&mb_cond);
    pthread_mutex_unlock(&mb_lock);
}

void mailbox_drain(void)
{
    pthread_mutex_lock(&mb_lock);
    kg_msg *m = head;
    head = tail = NULL;
    pthread_mutex_unlock(&mb_lock);
    while (m) {
        kg_msg *next = m->next;
        if (m->reply)
            reply_finish(m->reply, 503, "shutting_down", "kumaguard is stopping");
        mailbox_free(m);
        m = next;
    }
}

kg_reply *reply_new(void)
{
    kg_reply *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->lock, NULL);
    kg_cond_init(&r->cond);
    r->refs = 1;
    r->count = -1;
    return r;
}

void reply_put(kg_reply *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    int left = --r->refs;
    pthread_mutex_unlock(&r->lock);
    if (left == 0) {
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
    }
}

void reply_finish_count(kg_reply *r, int status, const char *error, const char *detail,
                        int64_t count)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    if (!r->done) {
        r->status = status;
        snprintf(r->error, sizeof r->error, "%s", error ? error : "");
        snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
        r->count = count;
        r->done = true;
        pthread_cond_broadcast(&r->cond);
    }
    pthread_mutex_unlock(&r->lock);
}

void reply_finish(kg_reply *r, int status, const char *error, const char *detail)
{
    reply_finish_count(r, status, error, detail, -1);
}

bool reply_wait(kg_reply *r, int timeout_ms)
{
    struct timespec deadline = kg_deadline_in(timeout_ms);
    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        if (pthread_cond_timedwait(&r->cond, &r->lock, &deadline) == ETIMEDOUT)
            break;
    }
    bool done = r->done;
    pthread_mutex_unlock(&r->lock);
    return done;
}

void mailbox_call_msg(kg_msg *m, int timeout_ms, int *status, char *error, size_t errlen,
                      char *detail, size_t detlen, int64_t *count)
{
    if (count)
        *count = -1;
    kg_reply *r = reply_new();
    if (!r) {
        if (m->data && m->data_free)
            m->data_free(m->data);
        m->data = NULL;
        *status = 500;
        snprintf(error, errlen, "out_of_memory");
        snprintf(detail, detlen, "could not allocate a reply");
        return;
    }
    m->reply = r;
    if (mailbox_post(m) != 0) {
        if (m->data && m->data_free)
            m->data_free(m->data);
        *status = 503;
        snprintf(error, errlen, "shutting_down");
        snprintf(detail, detlen, "kumaguard is stopping");
    } else if (!reply_wait(r, timeout_ms)) {
        *status = 504;
        snprintf(error, errlen, "timeout");
        snprintf(detail, detlen, "the controller did not answer within %d ms", timeout_ms);
    } else {
        pthread_mutex_lock(&r->lock);
        *status = r->status;
        snprintf(error, errlen, "%s", r->error);
        snprintf(detail, detlen, "%s", r->detail);
        if (count)
            *count = r->count;
        pthread_mutex_unlock(&r->lock);
    }
    m->data = NULL; /* the mailbox owned it from the post on */
    m->reply = NULL;
    reply_put(r);
}

void mailbox_call(kg_msg_kind kind, const char *node, const char *actor, int timeout_ms,
                  int *status, char *error, size_t errlen, char *detail, size_t detlen)
{
    kg_msg m = {.kind = kind};
    snprintf(m.node, sizeof m.node, "%s", node ? node : "");
    snprintf(m.actor, sizeof m.actor, "%s", actor ? actor : "");
    mailbox_call_msg(&m, timeout_ms, status, error, errlen, detail, detlen, NULL);
}
