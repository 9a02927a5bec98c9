/* mailbox.h — the one way requests cross threads, inward: a queue of messages to the
 * controller thread (probe results from the prober, actions from HTTP threads).
 *
 * A message that needs an answer carries a `kg_reply`; the sender waits on it with a timeout
 * and the controller fills it in.  Replies are reference counted so a sender that timed out
 * and left does not leave the controller writing into freed memory.
 *
 * Owns: the queue, its lock and condition variable.  Must not: decide anything. */
#ifndef KG_MAILBOX_H
#define KG_MAILBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "types.h"

typedef enum {
    MSG_PROBE_RESULT = 0,    /* prober -> controller */
    MSG_TRIGGER_HEALTH_CHECK,/* probe every node now */
    MSG_UPDATE_LOADS,        /* re-read monitor counts now */
    MSG_TRIGGER_REBALANCE,   /* minimal-movement rebalance */
    MSG_FORCE_REBALANCE_ALL, /* recompute every unpinned home (confirmed by the API) */
    MSG_CANCEL_REBALANCE,
    MSG_NODE_DRAIN,
    MSG_NODE_MAINTENANCE,
    MSG_NODE_ENABLE,
    MSG_NGINX_OUTCOME,       /* nginx worker -> controller: a write+validate+reload attempt */
    MSG_DB_DONE,             /* database applier -> controller: a finished db_job (data) */
    MSG_RECONCILE_DONE,      /* reconcile applier -> controller: one call's outcome */
    MSG_PANIC_OVERRIDE,      /* operator: allow moves while the panic guard holds */
    MSG_MONITOR_OP,          /* HTTP -> controller: move / pin / unpin monitors; `data` is a
                                monitor_op_request (monitor_ops.h) */
    MSG_SETUP_CHANGED,       /* setup watcher -> controller: first-run setup became pending or
                                complete; `text` says which (setup_watch.h) */
    MSG_SHUTDOWN
} kg_msg_kind;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;
    bool done;
    int status;              /* HTTP-like: 200, 202, 400, 404, 409, 503 ... */
    char error[128];         /* short error code, e.g. "not_leader" */
    char detail[256];
    int64_t count;           /* what the action changed (e.g. monitors), -1 = not counted */
} kg_reply;

typedef struct kg_msg {
    kg_msg_kind kind;
    char node[KG_NODE_ID_MAX + 1]; /* probe result / node actions */
    uint64_t probe_round;          /* probe result: which scheduling round it belongs to */
    probe_result probe;
    char actor[64];                /* who asked (remote address), for the event log */
    bool flag;                     /* MSG_NGINX_OUTCOME: ok */
    double value;                  /* MSG_NGINX_OUTCOME: duration in ms */
    char text[256];                /* MSG_NGINX_OUTCOME: error */
    int status;                    /* MSG_RECONCILE_DONE: rsched_result */
    int http_status;               /* MSG_RECONCILE_DONE */
    kg_reply *reply;               /* NULL when nobody waits */
    struct kg_msg *next;
    /* A payload too large to copy into every message (MSG_DB_DONE: a db_job; MSG_MONITOR_OP: a
     * monitor_op_request).  Owned by the message once posted: mailbox_free() calls
     * data_free(data), also for messages dropped unread. */
    void *data;
    void (*data_free)(void *data);
} kg_msg;

/* Queues a copy of *m.  Returns 0, or -1 when the mailbox is shut down. */
int mailbox_post(const kg_msg *m);
/* Waits up to timeout_ms for a message; returns a malloc'd message (free with mailbox_free)
 * or NULL on timeout. */
kg_msg *mailbox_wait(int timeout_ms);
void mailbox_free(kg_msg *m);
void mailbox_shutdown(void);
/* Drops everything still queued (at exit). */
void mailbox_drain(void);

kg_reply *reply_new(void);
void reply_put(kg_reply *r);
/* Controller side: fills the answer and wakes the sender. */
void reply_finish(kg_reply *r, int status, const char *error, const char *detail);
/* Sender side: waits up to timeout_ms; returns true when answered. */
bool reply_wait(kg_reply *r, int timeout_ms);

/* Convenience for HTTP threads: posts an action and waits for the controller's answer.
 * On timeout fills status 504.  The caller owns nothing afterwards. */
void mailbox_call(kg_msg_kind kind, const char *node, const char *actor, int timeout_ms,
                  int *status, char *error, size_t errlen, char *detail, size_t detlen);
/* The same for a prepared message (kind, node, actor, data...; its reply is made here).  The
 * message's data passes to the mailbox whatever happens (freed with data_free on failure);
 * *count gets the reply's count (-1 when the controller did not count anything). */
void mailbox_call_msg(kg_msg *m, int timeout_ms, int *status, char *error, size_t errlen,
                      char *detail, size_t detlen, int64_t *count);
/* Controller side: reply_finish with a count of what the action changed. */
void reply_finish_count(kg_reply *r, int status, const char *error, const char *detail,
                        int64_t count);

#endif
