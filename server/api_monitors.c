/* api_monitors.c — per-monitor listing and operations, and the webhook status, over HTTP
 * (see api_monitors.h; the documents are described in docs/API.md).
 *
 * A request that needs the database or the controller becomes a job: the connection is
 * suspended, a detached worker thread does the work and resumes it, and the access handler,
 * called again, answers from the job.  The job lives in the request's ext slot, so api.c frees
 * it whatever happens to the connection; the worker never touches it after the resume.
 * At most JOBS_MAX workers run; a request beyond that waits (suspended) in a FIFO that a
 * finishing worker takes from, so a burst of dashboard tabs is answered late rather than
 * refused.  Only a full queue is refused with 503 busy.
 * Owns: the jobs, the in-flight count, the queue.  Must not: write to the database (operations are the
 * controller's), or keep a connection between requests. */
#include "api_monitors.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_json.h"
#include "api_metrics.h"
#include "mailbox.h"
#include "monitor_ops.h"
#include "snapshot.h"
#include "store.h"
#include "webhook.h"

#define JOBS_MAX 4               /* workers at once; more wait in the queue */
#define QUEUE_MAX 64             /* requests waiting for a worker; more get 503 busy */
#define ACTION_TIMEOUT_MS 10000  /* as api.c's actions */

_Static_assert(STORE_OVR_ANY == 0 && STORE_OVR_NONE == 1 && STORE_OVR_OURS == 2 &&
                   STORE_OVR_PIN == 3 && STORE_OVR_NOT_PIN == 4,
               "api_monitors_filter.override uses store_override_filter's values");

enum { JOB_RUNNING = 1, JOB_DONE };

typedef struct mon_job {
    struct MHD_Connection *conn;
    const kg_config *cfg;
    api_route_id route;
    int state;                    /* under J.lock */
    struct mon_job *next;         /* the queue (under J.lock) */
    /* input */
    api_monitors_filter filter;
    monitor_op_request *req;      /* operations; handed to the mailbox by the worker */
    char actor[64];
    /* output */
    unsigned status;
    json_object *doc;             /* the answer (consumed when queued) */
} mon_job;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int in_flight;                /* workers running */
    int queued;
    mon_job *head, *tail;         /* waiting for a worker, oldest first */
    bool stopping;
} J = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void job_free(void *p)
{
    mon_job *j = p;
    if (!j)
        return;
    free(j->req);
    json_object_put(j->doc);
    free(j);
}

/* ------------------------------------------------------------------------------------------
 * The listing
 * ------------------------------------------------------------------------------------------ */

static bool node_live(const kg_node_view *n)
{
    return n && node_state_routable(n->state) && n->host_valid;
}

static json_object *str_or_null(const char *s, bool present)
{
    return present ? json_object_new_string(s) : NULL;
}

/* Where the monitor runs and why, in one sentence.  `eff` and `home` are the effective and
 * home nodes as the snapshot knows them (NULL when it does not). */
static void why(const store_monitor_row *r, const kg_node_view *eff, const kg_node_view *home,
                char *out, size_t len)
{
    const char *effective = r->has_over ? r->over : (r->has_home ? r->home : NULL);
    const char *state = eff ? node_state_name(eff->state) : "not a known node";
    bool live = node_live(eff);
    if (!r->active) {
        snprintf(out, len, "paused (inactive): no node runs it");
    } else if (!effective) {
        snprintf(out, len, "no home and no override: kumaguard gives it a home on the least "
                 "loaded node at its next convergence");
    } else if (r->has_over && !r->ours) {
        snprintf(out, len, "pinned to %s by an operator: kumaguard never moves it%s%s%s",
                 r->over, live ? "" : "; ", live ? "" : state,
                 live ? "" : ", so it runs nowhere until unpinned or the node returns");
    } else if (r->has_over) {
        /* kumaguard_override.reason: "converge" for a failover, "move by <actor>" */
        bool failover = !r->over_reason[0] || strcmp(r->over_reason, "converge") == 0;
        char home_state[300] = "", moved[512];
        if (r->has_home && home && !node_live(home))
            snprintf(home_state, sizeof home_state, " (%s is %s now)", r->home,
                     node_state_name(home->state));
        if (failover)
            snprintf(moved, sizeof moved, "failed over by kumaguard to %s", r->over);
        else
            snprintf(moved, sizeof moved, "moved to %s (%s), kumaguard's temporary override",
                     r->over, r->over_reason);
        snprintf(out, len, "%s: it goes back to its home %s once that node is online past the "
                 "hold-down%s", moved, r->has_home ? r->home : "node", home_state);
    } else if (live) {
        snprintf(out, len, "runs on its home node %s", r->home);
    } else {
        snprintf(out, len, "its home node %s is %s: kumaguard fails it over at the next "
                 "convergence", r->home, state);
    }
}

static json_object *monitor_json(const store_monitor_row *r, const kg_snapshot *s)
{
    const char *effective = r->has_over ? r->over : (r->has_home ? r->home : NULL);
    const kg_node_view *eff = effective ? snapshot_find_node(s, effective) : NULL;
    const kg_node_view *home = r->has_home ? snapshot_find_node(s, r->home) : NULL;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(r->id));
    json_object_object_add(o, "name", json_object_new_string(r->name));
    json_object_object_add(o, "active", json_object_new_boolean(r->active));
    json_object_object_add(o, "home", str_or_null(r->home, r->has_home));
    json_object_object_add(o, "override", str_or_null(r->over, r->has_over));
    json_object_object_add(o, "override_kind",
                           r->has_over ? json_object_new_string(r->ours ? "kumaguard" : "pin")
                                       : NULL);
    json_object_object_add(o, "pinned", json_object_new_boolean(r->has_over && !r->ours));
    json_object_object_add(o, "override_reason",
                           r->ours && r->over_reason[0] ? json_object_new_string(r->over_reason)
                                                        : NULL);
    char t[40];
    json_object_object_add(o, "override_since",
                           r->ours && r->over_since_ms > 0
                               ? json_object_new_string(api_format_time(r->over_since_ms, t,
                                                                        sizeof t))
                               : NULL);
    json_object_object_add(o, "effective", str_or_null(effective, effective != NULL));
    json_object_object_add(o, "effective_state",
                           effective ? json_object_new_string(eff ? node_state_name(eff->state)
                                                                  : "unknown")
                                     : NULL);
    json_object_object_add(o, "effective_live", json_object_new_boolean(r->active &&
                                                                        node_live(eff)));
    char because[1536];
    why(r, eff, home, because, sizeof because);
    json_object_object_add(o, "why", json_object_new_string(because));
    return o;
}

static void list_monitors(mon_job *j)
{
    kg_snapshot *s = snapshot_acquire();
    if (!s) {
        j->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        j->doc = api_doc_error("starting", "kumaguard has not built its first cluster picture");
        return;
    }
    const api_monitors_filter *f = &j->filter;
    const char **live = calloc((size_t)(s->n_nodes ? s->n_nodes : 1), sizeof *live);
    size_t n_live = 0;
    for (int i = 0; live && i < s->n_nodes; i++)
        if (node_live(&s->nodes[i]))
            live[n_live++] = s->nodes[i].id;
    store_monitor_query q = {
        .node = f->node[0] ? f->node : NULL, .home = f->home[0] ? f->home : NULL,
        .search = f->search[0] ? f->search : NULL, .active = f->active,
        .override = (store_override_filter)f->override, .live = f->live, .live_nodes = live,
        .n_live = n_live, .unassigned = f->unassigned, .after_id = f->after, .limit = f->limit,
        .want_total = f->total,
    };
    char err[256] = "out of memory";
    store_monitor_page page = {0};
    kg_store *st = live ? store_open(j->cfg, err, sizeof err) : NULL;
    int rc = st ? st->ops->query_monitors(st, &q, &page, err, sizeof err) : STORE_ERROR;
    store_close(st);
    free(live);
    if (rc != STORE_OK) {
        j->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        j->doc = api_doc_error("database_unavailable", err);
        snapshot_release(s);
        return;
    }
    json_object *o = json_object_new_object();
    json_object *a = json_object_new_array_ext(page.n ? (int)page.n : 1);
    for (size_t i = 0; i < page.n; i++)
        json_object_array_add(a, monitor_json(&page.rows[i], s));
    json_object_object_add(o, "monitors", a);
    json_object_object_add(o, "count", json_object_new_int64((int64_t)page.n));
    json_object_object_add(o, "limit", json_object_new_int(f->limit));
    json_object_object_add(o, "total", page.total >= 0 ? json_object_new_int64(page.total)
                                                       : NULL);
    /* keyset paging: pass next_after as ?after= for the next page */
    json_object_object_add(o, "next_after", page.more && page.n
                                                ? json_object_new_int64(page.rows[page.n - 1].id)
                                                : NULL);
    char t[40];
    json_object_object_add(o, "generated_at",
                           json_object_new_string(api_format_time(s->built_ms, t, sizeof t)));
    store_free_page(&page);
    snapshot_release(s);
    j->status = MHD_HTTP_OK;
    j->doc = o;
}

/* ------------------------------------------------------------------------------------------
 * Operations
 * ------------------------------------------------------------------------------------------ */

static void run_operation(mon_job *j)
{
    monitor_op_request *req = j->req;
    j->req = NULL; /* the mailbox owns it from here */
    json_object *ids = json_object_new_array_ext((int)req->n_ids);
    for (size_t i = 0; i < req->n_ids; i++)
        json_object_array_add(ids, json_object_new_int64(req->ids[i]));
    const char *op = monitor_op_name(req->kind);
    char node[KG_NODE_ID_MAX + 1];
    snprintf(node, sizeof node, "%s", req->node);
    bool revert = req->revert;
    kg_msg m = {.kind = MSG_MONITOR_OP, .data = req, .data_free = free};
    snprintf(m.actor, sizeof m.actor, "%s", j->actor);
    int status = 0;
    int64_t changed = -1;
    char error[128], detail[256];
    mailbox_call_msg(&m, ACTION_TIMEOUT_MS, &status, error, sizeof error, detail, sizeof detail,
                     &changed);
    if (status < 100 || status > 599)
        status = 500;
    j->status = (unsigned)status;
    if (status >= 400) {
        json_object_put(ids);
        j->doc = api_doc_error(error[0] ? error : "failed", detail);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(true));
    json_object_object_add(o, "action", json_object_new_string(op));
    json_object_object_add(o, "monitors", ids);
    if (node[0])
        json_object_object_add(o, "node", json_object_new_string(node));
    if (strcmp(op, "move") == 0)
        json_object_object_add(o, "revert", json_object_new_boolean(revert));
    json_object_object_add(o, "changed", json_object_new_int64(changed < 0 ? 0 : changed));
    json_object_object_add(o, "status", json_object_new_int(status));
    json_object_object_add(o, "detail", json_object_new_string(detail));
    j->doc = o;
}

/* ------------------------------------------------------------------------------------------
 * Jobs
 * ------------------------------------------------------------------------------------------ */

static void run_job(mon_job *j)
{
    if (j->route == API_R_MONITORS)
        list_monitors(j);
    else
        run_operation(j);
    struct MHD_Connection *conn = j->conn;
    pthread_mutex_lock(&J.lock);
    j->state = JOB_DONE;
    pthread_mutex_unlock(&J.lock);
    /* j may be freed from here on (the access handler answers, then completion frees it) */
    MHD_resume_connection(conn);
}

/* Answers a job without running it (no worker could be started, or we are stopping). */
static void refuse_job(mon_job *j, const char *detail)
{
    json_object *doc = api_doc_error("busy", detail);
    pthread_mutex_lock(&J.lock);
    j->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    j->doc = doc;
    j->state = JOB_DONE;
    pthread_mutex_unlock(&J.lock);
    MHD_resume_connection(j->conn);
}

/* A worker runs its first job, then whatever waits in the queue, then ends. */
static void *job_main(void *arg)
{
    mon_job *j = arg;
    while (j) {
        run_job(j);
        pthread_mutex_lock(&J.lock);
        j = J.head;
        if (j) {
            J.head = j->next;
            if (!J.head)
                J.tail = NULL;
            J.queued--;
            j->next = NULL;
        } else {
            J.in_flight--;
            pthread_cond_broadcast(&J.cond);
        }
        pthread_mutex_unlock(&J.lock);
    }
    return NULL;
}

static enum MHD_Result start_job(mon_job *j, struct MHD_Connection *c, void **ext,
                                 void (**ext_free)(void *))
{
    pthread_mutex_lock(&J.lock);
    enum { RUN, WAIT, REFUSE } what = REFUSE;
    if (J.stopping || (J.in_flight >= JOBS_MAX && J.queued >= QUEUE_MAX)) {
        what = REFUSE;
    } else if (J.in_flight < JOBS_MAX) {
        what = RUN;
        J.in_flight++;
        j->state = JOB_RUNNING;
    } else {
        what = WAIT;
        j->state = JOB_RUNNING;
        j->next = NULL;
        if (J.tail)
            J.tail->next = j;
        else
            J.head = j;
        J.tail = j;
        J.queued++;
        /* suspend before a worker can take it: still under the lock */
        MHD_suspend_connection(c);
    }
    pthread_mutex_unlock(&J.lock);
    if (what == REFUSE) {
        job_free(j);
        return api_queue_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "busy",
                               "too many monitor requests in progress; retry shortly");
    }
    *ext = j;
    *ext_free = job_free;
    if (what == WAIT)
        return MHD_YES;
    MHD_suspend_connection(c);
    pthread_attr_t attr;
    pthread_t t;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &attr, job_main, j);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        refuse_job(j, "cannot start a worker");
        pthread_mutex_lock(&J.lock);
        J.in_flight--;
        pthread_cond_broadcast(&J.cond);
        pthread_mutex_unlock(&J.lock);
    }
    return MHD_YES;
}

static enum MHD_Result answer_job(mon_job *j, struct MHD_Connection *c)
{
    pthread_mutex_lock(&J.lock);
    int state = j->state;
    pthread_mutex_unlock(&J.lock);
    if (state != JOB_DONE)
        return MHD_YES; /* not expected: the connection is suspended while the job runs */
    json_object *doc = j->doc;
    j->doc = NULL;
    if (!doc)
        return api_queue_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "no answer");
    return api_queue_json(c, j->status, doc, NULL);
}

static const char *arg(struct MHD_Connection *c, const char *key)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

enum MHD_Result api_monitors_serve(const kg_config *cfg, struct MHD_Connection *c,
                                   const api_match *m, const char *body, size_t len, void **ext,
                                   void (**ext_free)(void *))
{
    if (*ext)
        return answer_job(*ext, c);
    if (m->id == API_R_WEBHOOK_STATUS) {
        webhook_sink_status st[KG_WEBHOOK_SINKS];
        int n = webhook_status(st, KG_WEBHOOK_SINKS);
        return api_queue_json(c, MHD_HTTP_OK, api_doc_webhook_status(st, n), NULL);
    }
    mon_job *j = calloc(1, sizeof *j);
    if (!j)
        return MHD_NO;
    j->conn = c;
    j->cfg = cfg;
    j->route = m->id;
    char err[256];
    if (m->id == API_R_MONITORS) {
        api_monitors_params p = {arg(c, "node"), arg(c, "home"),  arg(c, "state"),
                                 arg(c, "pinned"), arg(c, "override"), arg(c, "q"),
                                 arg(c, "limit"), arg(c, "after"), arg(c, "total")};
        if (api_parse_monitors_params(&p, &j->filter, err, sizeof err) != 0) {
            job_free(j);
            return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", err);
        }
        return start_job(j, c, ext, ext_free);
    }
    int kind = api_monitor_op_kind(m->id);
    j->req = kind < 0 ? NULL : malloc(sizeof *j->req);
    if (!j->req) {
        job_free(j);
        return kind < 0 ? api_queue_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no handler")
                        : MHD_NO;
    }
    if (api_parse_monitor_op((monitor_op_kind)kind, m->monitor_id, body, len, j->req, err,
                             sizeof err) != 0) {
        job_free(j);
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", err);
    }
    api_peer_string(c, j->actor, sizeof j->actor);
    return start_job(j, c, ext, ext_free);
}

void api_monitors_start(void)
{
    pthread_mutex_lock(&J.lock);
    J.stopping = false;
    pthread_mutex_unlock(&J.lock);
}

void api_monitors_stop(void)
{
    pthread_mutex_lock(&J.lock);
    J.stopping = true;
    while (J.in_flight > 0)
        pthread_cond_wait(&J.cond, &J.lock);
    pthread_mutex_unlock(&J.lock);
}

char *api_monitors_metrics(char *text, size_t *len)
{
    webhook_sink_status st[KG_WEBHOOK_SINKS];
    int n = webhook_status(st, KG_WEBHOOK_SINKS);
    return api_metrics_append_webhooks(text, len, st, n);
}
