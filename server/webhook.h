/* webhook.h — event notifications to HTTP endpoints (a chat channel, an incident tool).
 *
 * Up to KG_WEBHOOK_SINKS sinks, each with its URL, optional HMAC secret, kind filter and
 * payload format (KUMAGUARD_WEBHOOK_* and KUMAGUARD_WEBHOOK2_* settings).  The controller hands
 * every event to webhook_submit(), which only copies it into each interested sink's bounded
 * queue and returns: it never waits for the network, so a receiver that hangs cannot delay a
 * failover.  Each sink has a thread of its own that delivers its queue in order, one POST at a
 * time:
 *   - body: JSON (`json`: the event as in the API plus `instance`, `text` and `timestamp`;
 *     `slack`: {"text": ...}; `discord`: {"content": ...});
 *   - headers: X-Kumaguard-Event (kind), X-Kumaguard-Delivery (event id), X-Kumaguard-Timestamp
 *     (Unix seconds) and, with a secret, X-Kumaguard-Signature: sha256=<hex HMAC-SHA256 of
 *     "<timestamp>.<body>" keyed with the secret>;
 *   - a 2xx answer delivers; anything else (an error status, a refused connection, no answer
 *     within KUMAGUARD_WEBHOOK_TIMEOUT) is retried after 1 s, 2 s, 4 s ... up to 60 s apart;
 *     the first attempt that fails when the event is older than KUMAGUARD_WEBHOOK_RETRY_WINDOW
 *     gives it up (counted) and the next one goes.  So a receiver outage shorter than the
 *     window loses nothing.  A full queue drops its oldest waiting event (counted).
 *
 * HMAC-SHA256 comes from OpenSSL's libcrypto, which libcurl already loads into the process:
 * no second implementation of a hash to get wrong.
 *
 * Owns: the sink threads, their queues and counters.  Must not: block the caller of
 * webhook_submit(), log per delivery at more than debug level, or put a URL or secret into a
 * status (URLs are shown as scheme://host[:port] only — a Slack URL is a credential). */
#ifndef KG_WEBHOOK_H
#define KG_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "snapshot.h"

#define KG_WEBHOOK_SINKS 2
#define KG_WEBHOOK_BACKOFF_MAX_MS 60000

typedef enum { WEBHOOK_JSON = 0, WEBHOOK_SLACK, WEBHOOK_DISCORD } webhook_format;

/* Kinds a sink gets when KUMAGUARD_WEBHOOK_EVENTS is not set. */
#define KG_WEBHOOK_DEFAULT_EVENTS                                                              \
    "failover,revert,panic,capacity_warning,nginx_failed,leader,database,reconcile_failed"

typedef struct {
    bool enabled;
    char target[160];        /* scheme://host[:port] of the URL, never the path */
    webhook_format format;
    uint32_t kinds;          /* bit (1 << kg_event_kind) per kind sent */
    bool signed_;            /* a secret is set */
    int64_t delivered;       /* events the receiver accepted (2xx) */
    int64_t failures;        /* failed attempts (each retry counts) */
    int64_t retries;         /* attempts after the first, per event */
    int64_t given_up;        /* events dropped after the retry window */
    int64_t dropped;         /* events dropped because the queue was full */
    int queued;              /* events waiting now (including one being retried) */
    int64_t last_success_ms; /* 0 = never */
    int64_t last_failure_ms;
    char last_error[160];    /* "" after a success */
} webhook_sink_status;

/* Starts a thread per configured sink (none configured: does nothing).  0, or -1 + err. */
int webhook_start(const kg_config *cfg, char *err, size_t errlen);
/* Stops the threads; events still queued are dropped (their count is in the log). */
void webhook_stop(void);
/* Controller thread (any thread): queues a copy of ev for every sink that wants its kind.
 * Never waits for the network. */
void webhook_submit(const kg_event *ev);
/* Status of every configured sink (up to max); returns how many. */
int webhook_status(webhook_sink_status *out, int max);

/* ---- pure helpers (unit tested, used by config.c for validation) ------------------------ */

/* "json", "slack" or "discord".  0, or -1. */
int webhook_parse_format(const char *s, webhook_format *out);
const char *webhook_format_name(webhook_format f);
/* Comma-separated event kind names, or "all".  0, or -1 with the offending name in err. */
int webhook_parse_kinds(const char *s, uint32_t *mask, char *err, size_t errlen);
/* http:// or https:// URL with a host.  The scheme://host[:port] part goes to target. */
int webhook_parse_url(const char *url, char *target, size_t tlen, char *err, size_t errlen);
/* Delay before retry number `attempt` (1 = the first retry): 1 s, 2 s, 4 s ... capped. */
int64_t webhook_backoff_ms(int attempt);
/* The request body for ev in format f (malloc'd, NUL-terminated; NULL when out of memory). */
char *webhook_body(webhook_format f, const kg_event *ev, const char *instance, size_t *len);
/* Lower-case hex HMAC-SHA256 of "<timestamp>.<body>" keyed with secret, into hex[65]. */
void webhook_signature(const char *secret, const char *timestamp, const char *body, size_t len,
                       char hex[65]);

#endif
