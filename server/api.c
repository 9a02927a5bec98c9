/* api.c — the HTTP server: libmicrohttpd daemon, request routing, authentication, errors,
 * actions and the dashboard files (every endpoint is listed in docs/API.md).
 *
 * Threading: MHD runs a pool of cfg->http_threads epoll threads.  Reads are answered from the
 * current snapshot without any lock beyond snapshot_acquire (/api/system-status and
 * /api/node-status are rendered once per snapshot, plain or gzip, and one response is shared
 * by every GET: api_cache.h).  Actions are the
 * one slow thing — mailbox_call waits up to ACTION_TIMEOUT_MS for the controller — so an action
 * suspends its connection and a short-lived worker thread waits instead, keeping the pool
 * free for reads.  /api/events streams are parked the same way (api_sse.c).
 *
 * Defences (README, "Security"): every request passes the strict framing rules of api_frame.c
 * before it is routed (violations: 400 JSON and the connection closed); connections are capped
 * per client and in total and closed when idle (api_limits.h, MHD options), event streams per
 * client (api_sse.c); HTML refuses to be framed (CSP frame-ancestors, X-Frame-Options), and
 * every response carries nosniff.
 *
 * Owns: the MHD daemon, the per-request state, auth decisions.  Must not: change cluster state
 * (actions go to the controller through the mailbox) or query a database per request. */
#include "api.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api_cache.h"
#include "api_frame.h"
#include "api_fixed_node.h"
#include "api_respond.h"
#include "api_json.h"
#include "api_limits.h"
#include "api_metrics.h"
#include "api_monitors.h"
#include "api_route.h"
#include "api_sse.h"
#include "events.h"
#include "log.h"
#include "mailbox.h"
#include "snapshot.h"

#define ACTION_TIMEOUT_MS 10000
#define ACTION_MAX_IN_FLIGHT 8
/* Per-connection pool for request and response headers (bodies are ours).  MHD zeroes it on
 * every request, so its size is a per-request cost (about 3 % of a cached GET at 16 KiB); 32 KiB
 * keeps room for request headers of about 16 KiB (many cookies on a shared domain). */
#define CONNECTION_MEMORY (32 * 1024)
#define DEBUG_LOGS_DEFAULT 100
#define STATIC_FILE_MAX (64LL * 1024 * 1024)
#define FORCE_CONFIRM "force-rebalance-all"
#define PANIC_CONFIRM "move-monitors-during-outage"
#define API_DISCARD_MAX (1024 * 1024) /* over-limit chunked bytes read before closing */
/* What HTML (and any other file we serve) may do: load from its own origin only, and never
 * be shown inside a frame of another page (clickjacking: a decoy page framing the dashboard of
 * a no-token install made two clicks drain a node). */
#define HTML_CSP "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; " \
                 "form-action 'self'; object-src 'none'"

struct kg_api {
    struct MHD_Daemon *daemon;
    const kg_config *cfg;      /* owned by the caller; must outlive the API */
    api_sse_hub *sse;
    api_limits *conns;         /* open connections per client (api_limits.h) */
    char web_dir[PATH_MAX];
    char static_root[PATH_MAX]; /* realpath of <web_dir>/static, "" when absent */

    /* /api/system-status and /api/node-status: rendered once per snapshot, one response
     * queued on every GET until a newer snapshot appears (api_cache.h) */
    api_cache *docs;

    pthread_mutex_t act_lock;   /* guards the fields below and api_req.act_* */
    pthread_cond_t act_cond;
    int actions_in_flight;
    bool stopping;
};

enum { ACT_NONE = 0, ACT_RUNNING, ACT_DONE };

/* One HTTP request, from the first call of the access handler to the completion callback. */
typedef struct {
    kg_api *api;
    struct MHD_Connection *conn;
    bool headers_seen;       /* the first access-handler call (headers complete) happened */
    bool head;               /* HEAD: never a body */
    char frame_error[96];    /* why the request breaks the framing rules; "" = it does not */
    api_match m;
    char *body;
    size_t body_len, body_cap;
    bool responded;          /* a response was queued early (413) */
    bool too_large;          /* a chunked body went over API_BODY_MAX; being dropped */
    size_t discarded;

    /* action state, under api->act_lock */
    int act_state;
    kg_msg_kind act_kind;
    char actor[64];
    int act_status;
    char act_error[128];
    char act_detail[256];

    /* state of a handler outside this file across a suspension (api_monitors.c) */
    void *ext;
    void (*ext_free)(void *ext);
} api_req;

/* ------------------------------------------------------------------------------------------
 * Response helpers
 * ------------------------------------------------------------------------------------------ */

/* 400 for a request that breaks the framing rules, and the connection is closed after it:
 * what follows in the stream (a body of disputed length) must never be read as a request. */
static enum MHD_Result framing_error(struct MHD_Connection *c, const char *why)
{
    char d[160];
    snprintf(d, sizeof d, "malformed request: %s", why);
    size_t len = 0;
    json_object *o = api_doc_error("bad_request", d);
    char *body = o ? api_json_dump(o, &len) : NULL;
    json_object_put(o);
    if (!body)
        return MHD_NO;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    api_add_common_headers(resp);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_BAD_REQUEST, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result no_snapshot(struct MHD_Connection *c)
{
    return api_queue_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "starting",
                           "kumaguard has not built its first cluster picture yet");
}

/* ------------------------------------------------------------------------------------------
 * Peers and authentication
 * ------------------------------------------------------------------------------------------ */

static bool sockaddr_is_loopback(const struct sockaddr *sa)
{
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* A request relayed by a local reverse proxy arrives from loopback too; the proxy headers tell
 * it apart from a local curl, so "loopback only" cannot be bypassed through nginx. */
static bool is_proxied(struct MHD_Connection *c)
{
    static const char *const hdrs[] = {"Forwarded", "X-Forwarded-For", "X-Real-IP"};
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++)
        if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, hdrs[i]))
            return true;
    return false;
}

/* Host names a browser would send for this machine itself: an IP literal or localhost. */
static bool host_is_local(const char *host)
{
    char h[256];
    snprintf(h, sizeof h, "%s", host);
    char *end = h[0] == '[' ? strchr(h, ']') : strrchr(h, ':');
    if (h[0] == '[') {
        if (!end)
            return false;
        *end = 0;
        memmove(h, h + 1, strlen(h));
    } else if (end) {
        *end = 0;
    }
    if (strcasecmp(h, "localhost") == 0)
        return true;
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* A page on another site can make a browser POST to a kumaguard on localhost (a form, a
 * no-cors fetch) and, by DNS rebinding, even read the answers.  Browsers say where a request
 * comes from: refuse what they mark cross-site, an Origin that is not this Host, and —
 * without a token, where the loopback peer is all that authenticates — a Host that is not an
 * address or localhost (a rebinding page has its own domain name there). */
static bool is_cross_site(struct MHD_Connection *c, bool token_set)
{
    const char *sfs = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
    if (sfs && strcmp(sfs, "same-origin") != 0 && strcmp(sfs, "none") != 0)
        return true;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (origin) {
        const char *o = strstr(origin, "://");
        o = o ? o + 3 : origin;
        if (!host || strcasecmp(o, host) != 0)
            return true;
    }
    return !token_set && host && !host_is_local(host);
}

/* 0 when allowed, else the HTTP status to answer (401/403) with error and detail. */
static unsigned check_auth(const kg_api *a, struct MHD_Connection *c, const char **error,
                           const char **detail)
{
    const char *token = a->cfg->api_token;
    if (is_cross_site(c, token && *token)) {
        *error = "cross_site";
        *detail = "refused: the request comes from another site (Origin, Sec-Fetch-Site or "
                  "Host do not match this server)";
        return MHD_HTTP_FORBIDDEN;
    }
    if (token && *token) {
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
        int rc = api_bearer_check(h, token);
        if (rc == 0)
            return 0;
        *error = rc == 1 ? "unauthorized" : "forbidden";
        *detail = rc == 1 ? "send Authorization: Bearer <KUMAGUARD_API_TOKEN>"
                          : "wrong token";
        return rc == 1 ? MHD_HTTP_UNAUTHORIZED : MHD_HTTP_FORBIDDEN;
    }
    if (sockaddr_is_loopback(api_peer_addr(c)) && !is_proxied(c))
        return 0;
    *error = "forbidden";
    *detail = "without KUMAGUARD_API_TOKEN, actions are accepted only from loopback clients "
              "that are not relayed by a proxy";
    return MHD_HTTP_FORBIDDEN;
}

/* ------------------------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* /api/system-status for a caller holding the API token: the public document plus where the
 * database is and who kumaguard is there (host, port, name, user, the raw error), which the
 * public one leaves out.  Rendered per request: only operators ask this way. */
static enum MHD_Result serve_system_status_detailed(kg_api *a, struct MHD_Connection *c)
{
    kg_snapshot *s = snapshot_acquire();
    if (!s)
        return no_snapshot(c);
    json_object *o = api_doc_system_status(s, a->cfg);
    if (o)
        api_json_add_db_detail(o, s, a->cfg);
    snapshot_release(s);
    if (!o)
        return api_queue_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
    return api_queue_json(c, MHD_HTTP_OK, o, NULL);
}

static bool wants_gzip(struct MHD_Connection *c)
{
    return api_accepts_gzip(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept-Encoding"));
}

/* /api/system-status and /api/node-status.  The hot path is one mutex and MHD_queue_response
 * of a ready response: no JSON work, no allocation, no copy of the body (api_cache.h). */
static enum MHD_Result serve_cached_doc(kg_api *a, struct MHD_Connection *c, api_doc_kind kind)
{
    kg_snapshot *s = snapshot_acquire();
    if (!s)
        return no_snapshot(c);
    enum MHD_Result ret = api_cache_queue(a->docs, kind, s, wants_gzip(c), c);
    snapshot_release(s);
    return ret;
}

static enum MHD_Result serve_system_status(kg_api *a, struct MHD_Connection *c)
{
    const char *token = a->cfg->api_token;
    if (token && *token &&
        api_bearer_check(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_AUTHORIZATION),
                         token) == 0)
        return serve_system_status_detailed(a, c);
    return serve_cached_doc(a, c, API_DOC_SYSTEM_STATUS);
}

static enum MHD_Result serve_doc(kg_api *a, struct MHD_Connection *c, api_route_id id)
{
    kg_snapshot *s = snapshot_acquire();
    if (id == API_R_HEALTH) {
        int st = 200;
        json_object *o = api_doc_health(s, now_ms(), &st);
        snapshot_release(s);
        return api_queue_json(c, (unsigned)st, o, NULL);
    }
    if (!s)
        return no_snapshot(c);
    json_object *o = NULL;
    int st = 200;
    switch (id) {
    case API_R_LB_STATUS: o = api_doc_load_balancer_status(s); break;
    case API_R_HEALTH_CHECK_STATUS: o = api_doc_health_check_status(s, a->cfg); break;
    case API_R_FAULT_STATUS: o = api_doc_fault_detection_status(s, a->cfg); break;
    case API_R_REBALANCING_STATUS: o = api_doc_rebalancing_status(s, a->cfg); break;
    case API_R_HEALTH_STATUS: o = api_doc_health_status(s); break;
    case API_R_LB_HEALTH: o = api_doc_lb_health(s, &st); break;
    case API_R_CAPACITY: o = api_doc_capacity(s); break;
    case API_R_AVAILABLE_NODES: o = api_doc_available_nodes(s); break;
    case API_R_SETUP_STATUS: o = api_doc_setup_status(s); break;
    default: break;
    }
    snapshot_release(s);
    if (!o)
        return api_queue_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "no document");
    return api_queue_json(c, (unsigned)st, o, NULL);
}

static enum MHD_Result serve_ping(struct MHD_Connection *c)
{
    return api_queue_json(c, MHD_HTTP_OK, api_doc_ping(now_ms()), NULL);
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c)
{
    kg_snapshot *s = snapshot_acquire();
    if (!s)
        return no_snapshot(c);
    size_t len = 0;
    char *text = api_metrics_render(s, &len);
    snapshot_release(s);
    text = api_monitors_metrics(text, &len); /* webhook counters, read now */
    if (!text)
        return api_queue_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
    return api_queue_buffer(c, MHD_HTTP_OK, text, len, API_METRICS_CONTENT_TYPE, NULL, NULL);
}

static const char *arg(struct MHD_Connection *c, const char *key)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

static enum MHD_Result serve_history(struct MHD_Connection *c)
{
    api_history_params p = {arg(c, "node"),  arg(c, "kind"),  arg(c, "since"),
                            arg(c, "until"), arg(c, "limit"), arg(c, "before")};
    events_query q;
    char node[KG_NODE_ID_MAX + 1];
    char err[256];
    if (api_parse_history_params(&p, &q, node, err, sizeof err) != 0)
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", err);
    kg_event *ev = NULL;
    int n = 0;
    if (events_query_run(&q, &ev, &n, err, sizeof err) != 0)
        return api_queue_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "history_unavailable", err);
    json_object *o = api_doc_history(ev, n, q.limit);
    free(ev);
    return api_queue_json(c, MHD_HTTP_OK, o, NULL);
}

static enum MHD_Result serve_debug_config(kg_api *a, struct MHD_Connection *c)
{
    char *js = config_to_json_redacted(a->cfg);
    if (!js)
        return api_queue_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
    return api_queue_buffer(c, MHD_HTTP_OK, js, strlen(js), "application/json", NULL, NULL);
}

static enum MHD_Result serve_debug_logs(struct MHD_Connection *c)
{
    int64_t want = DEBUG_LOGS_DEFAULT;
    const char *v = arg(c, "lines");
    if (v && api_parse_int64(v, 1, KG_LOG_RING_LINES, &want) != 0) {
        char detail[96];
        snprintf(detail, sizeof detail, "lines: expected an integer 1..%d", KG_LOG_RING_LINES);
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", detail);
    }
    char **lines = NULL;
    int n = log_ring_copy((int)want, &lines);
    json_object *o = api_doc_logs(lines, n);
    log_ring_free(lines, n);
    return api_queue_json(c, MHD_HTTP_OK, o, NULL);
}

/* HEAD /api/events: the headers of a stream and no body.  A stream response cannot be used:
 * for HEAD, libmicrohttpd 0.9.75 still sends the chunked terminator of a callback response,
 * a stray body that breaks keep-alive. */
static enum MHD_Result serve_events_head(struct MHD_Connection *c)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    api_add_common_headers(resp);
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result serve_events(kg_api *a, struct MHD_Connection *c)
{
    int st = 503;
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    api_client_key client;
    if (!api_client_key_for_request(api_peer_addr(c), &a->cfg->trusted_proxy_nets,
                                    MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                                "X-Forwarded-For"),
                                    &client))
        memset(&client, 0, sizeof client);
    struct MHD_Response *resp = api_sse_open(a->sse, c, &client, last, &st);
    if (!resp && st == MHD_HTTP_TOO_MANY_REQUESTS) {
        char who[INET6_ADDRSTRLEN], detail[160];
        api_client_key_format(&client, who, sizeof who);
        log_warn("http: refused an event stream for %s: it has %d open "
                 "(KUMAGUARD_EVENT_STREAMS_PER_CLIENT)", who, a->cfg->event_streams_per_client);
        snprintf(detail, sizeof detail,
                 "this client already has %d event streams open (the limit); close one, or "
                 "poll /api/system-status", a->cfg->event_streams_per_client);
        return api_queue_error(c, (unsigned)st, "too_many_streams", detail);
    }
    if (!resp)
        return api_queue_error(c, (unsigned)st, "unavailable",
                               "too many event streams open, or kumaguard is stopping");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Dashboard files
 * ------------------------------------------------------------------------------------------ */

static enum MHD_Result file_not_found(struct MHD_Connection *c, const char *what)
{
    return api_queue_error(c, MHD_HTTP_NOT_FOUND, "not_found", what);
}

/* Serves an already validated path.  ETag from size and mtime; If-None-Match gives 304. */
static enum MHD_Result serve_file(struct MHD_Connection *c, const char *path,
                                  const char *cache_control)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return file_not_found(c, "no such file");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > STATIC_FILE_MAX) {
        close(fd);
        return file_not_found(c, "no such file");
    }
    char etag[64];
    snprintf(etag, sizeof etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtime);
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_NONE_MATCH);
    struct MHD_Response *resp;
    unsigned status;
    if (inm && strstr(inm, etag)) {
        close(fd);
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_MODIFIED;
    } else {
        resp = MHD_create_response_from_fd64((uint64_t)st.st_size, fd); /* MHD closes fd */
        status = MHD_HTTP_OK;
        if (!resp)
            close(fd);
    }
    if (!resp)
        return MHD_NO;
    api_add_common_headers(resp);
    MHD_add_response_header(resp, "Content-Type", api_content_type_for(path));
    MHD_add_response_header(resp, "Cache-Control", cache_control);
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "Referrer-Policy", "same-origin");
    MHD_add_response_header(resp, "Content-Security-Policy", HTML_CSP);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result serve_static(kg_api *a, struct MHD_Connection *c, const char *rel)
{
    if (!a->static_root[0])
        return file_not_found(c, "no static directory");
    char want[PATH_MAX], real[PATH_MAX];
    int n = snprintf(want, sizeof want, "%s/%s", a->static_root, rel);
    if (n < 0 || (size_t)n >= sizeof want || !realpath(want, real))
        return file_not_found(c, "no such file");
    /* rel was already checked (no "..", no hidden segments); this also catches symlinks that
     * point out of the static directory. */
    size_t rl = strlen(a->static_root);
    if (strncmp(real, a->static_root, rl) != 0 || real[rl] != '/')
        return file_not_found(c, "no such file");
    return serve_file(c, real, "public, max-age=300");
}

static enum MHD_Result serve_index(kg_api *a, struct MHD_Connection *c)
{
    static const char *const candidates[] = {"templates/dashboard.html", "static/index.html"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/%s", a->web_dir, candidates[i]);
        struct stat st;
        if (n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode))
            return serve_file(c, path, "no-cache");
    }
    return file_not_found(c, "the dashboard is not installed (web/templates/dashboard.html)");
}

/* ------------------------------------------------------------------------------------------
 * Actions
 * ------------------------------------------------------------------------------------------ */

static kg_msg_kind action_kind(api_route_id id)
{
    switch (id) {
    case API_R_UPDATE_LOADS: return MSG_UPDATE_LOADS;
    case API_R_TRIGGER_HEALTH_CHECK: return MSG_TRIGGER_HEALTH_CHECK;
    case API_R_TRIGGER_REBALANCING: return MSG_TRIGGER_REBALANCE;
    case API_R_FORCE_REBALANCE_ALL: return MSG_FORCE_REBALANCE_ALL;
    case API_R_CANCEL_REBALANCING: return MSG_CANCEL_REBALANCE;
    case API_R_NODE_DRAIN: return MSG_NODE_DRAIN;
    case API_R_NODE_MAINTENANCE: return MSG_NODE_MAINTENANCE;
    case API_R_NODE_ENABLE: return MSG_NODE_ENABLE;
    case API_R_PANIC_OVERRIDE: return MSG_PANIC_OVERRIDE;
    default: return MSG_SHUTDOWN; /* never reached: callers pass action routes only */
    }
}

static void *action_main(void *arg)
{
    api_req *r = arg;
    kg_api *a = r->api;
    int status = 0;
    char error[128], detail[256];
    mailbox_call(r->act_kind, r->m.node[0] ? r->m.node : NULL, r->actor, ACTION_TIMEOUT_MS,
                 &status, error, sizeof error, detail, sizeof detail);
    pthread_mutex_lock(&a->act_lock);
    r->act_status = status;
    snprintf(r->act_error, sizeof r->act_error, "%s", error);
    snprintf(r->act_detail, sizeof r->act_detail, "%s", detail);
    r->act_state = ACT_DONE;
    pthread_mutex_unlock(&a->act_lock);
    /* The access handler runs again and answers.  Counted down only after the resume, so
     * api_stop never stops the daemon with this connection still suspended. */
    MHD_resume_connection(r->conn);
    pthread_mutex_lock(&a->act_lock);
    a->actions_in_flight--;
    pthread_cond_broadcast(&a->act_cond);
    pthread_mutex_unlock(&a->act_lock);
    return NULL;
}

static enum MHD_Result answer_action(api_req *r, struct MHD_Connection *c)
{
    int status = r->act_status;
    if (status < 100 || status > 599)
        status = 500;
    if (status >= 400)
        return api_queue_error(c, (unsigned)status, r->act_error[0] ? r->act_error : "failed",
                               r->act_detail);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(true));
    json_object_object_add(o, "action", json_object_new_string(api_route_name(r->m.id)));
    if (r->m.node[0])
        json_object_object_add(o, "node", json_object_new_string(r->m.node));
    json_object_object_add(o, "status", json_object_new_int(status));
    json_object_object_add(o, "detail", json_object_new_string(r->act_detail));
    return api_queue_json(c, (unsigned)status, o, NULL);
}

static enum MHD_Result start_action(kg_api *a, api_req *r, struct MHD_Connection *c)
{
    pthread_mutex_lock(&a->act_lock);
    int state = r->act_state;
    pthread_mutex_unlock(&a->act_lock);
    if (state == ACT_DONE)
        return answer_action(r, c);
    if (state == ACT_RUNNING)
        return MHD_YES; /* not expected: the connection is suspended while running */

    if (r->m.id == API_R_FORCE_REBALANCE_ALL &&
        !api_parse_confirm_body(r->body, r->body_len, FORCE_CONFIRM))
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "confirmation_required",
                               "send the JSON body {\"confirm\":\"" FORCE_CONFIRM "\"}");
    if (r->m.id == API_R_PANIC_OVERRIDE &&
        !api_parse_confirm_body(r->body, r->body_len, PANIC_CONFIRM))
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "confirmation_required",
                               "send the JSON body {\"confirm\":\"" PANIC_CONFIRM "\"}");
    if (r->m.node[0]) {
        kg_snapshot *s = snapshot_acquire();
        bool unknown = s && !snapshot_find_node(s, r->m.node);
        snapshot_release(s);
        if (unknown)
            return api_queue_error(c, MHD_HTTP_NOT_FOUND, "unknown_node", r->m.node);
    }
    r->act_kind = action_kind(r->m.id);
    api_peer_string(c, r->actor, sizeof r->actor);

    pthread_mutex_lock(&a->act_lock);
    bool refuse = a->stopping || a->actions_in_flight >= ACTION_MAX_IN_FLIGHT;
    if (!refuse) {
        a->actions_in_flight++;
        r->act_state = ACT_RUNNING;
    }
    pthread_mutex_unlock(&a->act_lock);
    if (refuse)
        return api_queue_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "busy",
                               "too many actions in progress; retry shortly");

    MHD_suspend_connection(c);
    pthread_attr_t attr;
    pthread_t t;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &attr, action_main, r);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        MHD_resume_connection(c);
        pthread_mutex_lock(&a->act_lock);
        a->actions_in_flight--;
        r->act_state = ACT_NONE;
        pthread_cond_broadcast(&a->act_cond);
        pthread_mutex_unlock(&a->act_lock);
        return api_queue_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "busy", "cannot start a worker");
    }
    return MHD_YES;
}

/* ------------------------------------------------------------------------------------------
 * Dispatch
 * ------------------------------------------------------------------------------------------ */

static enum MHD_Result dispatch(kg_api *a, api_req *r, struct MHD_Connection *c,
                                const char *url)
{
    const api_match *m = &r->m;
    if (m->status == 404) {
        char detail[200];
        snprintf(detail, sizeof detail, "no such endpoint: %.120s", url);
        return api_queue_error(c, MHD_HTTP_NOT_FOUND, "not_found", detail);
    }
    if (m->status == 405) {
        char allow[32];
        api_allow_header(m->allowed, allow, sizeof allow);
        char detail[96];
        snprintf(detail, sizeof detail, "this endpoint accepts %s", allow);
        return api_queue_json_ex(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                             api_doc_error("method_not_allowed", detail), NULL, allow);
    }
    if (m->status == 400)
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                               "node ids match [A-Za-z0-9_.-]{1,50}");
    if (m->needs_auth) {
        const char *error = NULL, *detail = NULL;
        unsigned st = check_auth(a, c, &error, &detail);
        if (st)
            return api_queue_error(c, st, error, detail);
    }
    if (api_route_is_action(m->id))
        return start_action(a, r, c);

    switch (m->id) {
    case API_R_SYSTEM_STATUS: return serve_system_status(a, c);
    case API_R_NODE_STATUS: return serve_cached_doc(a, c, API_DOC_NODE_STATUS);
    case API_R_HEALTH:
    case API_R_LB_STATUS:
    case API_R_HEALTH_CHECK_STATUS:
    case API_R_FAULT_STATUS:
    case API_R_REBALANCING_STATUS:
    case API_R_HEALTH_STATUS:
    case API_R_LB_HEALTH:
    case API_R_CAPACITY:
    case API_R_SETUP_STATUS:
    case API_R_AVAILABLE_NODES: return serve_doc(a, c, m->id);
    case API_R_MONITORS:
    case API_R_MONITOR_MOVE:
    case API_R_MONITOR_PIN:
    case API_R_MONITOR_UNPIN:
    case API_R_WEBHOOK_STATUS:
        return api_monitors_serve(a->cfg, c, m, r->body, r->body_len, &r->ext, &r->ext_free);
    case API_R_PING: return serve_ping(c);
    case API_R_METRICS: return serve_metrics(c);
    case API_R_FAILOVER_HISTORY: return serve_history(c);
    case API_R_EVENTS: return r->head ? serve_events_head(c) : serve_events(a, c);
    case API_R_DEBUG_CONFIG: return serve_debug_config(a, c);
    case API_R_DEBUG_LOGS: return serve_debug_logs(c);
    case API_R_FIXED_NODE_STATUS: return api_fixed_node_status(c);
    case API_R_SET_FIXED_NODE: return api_fixed_node_set(c, r->body, r->body_len);
    case API_R_CLEAR_FIXED_NODE: return api_fixed_node_clear(c);
    case API_R_FIXED_NODE_PAGE: return api_fixed_node_page(c, m->node);
    case API_R_INDEX: return serve_index(a, c);
    case API_R_STATIC: return serve_static(a, c, m->static_rel);
    default: break;
    }
    return api_queue_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no handler");
}

static void drop_body(api_req *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
}

static enum MHD_Result too_large(api_req *r, struct MHD_Connection *c)
{
    drop_body(r);
    r->responded = true;
    char detail[64];
    snprintf(detail, sizeof detail, "request bodies are limited to %d bytes", API_BODY_MAX);
    return api_queue_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large", detail);
}

static api_req *req_new(kg_api *a, struct MHD_Connection *c)
{
    api_req *r = calloc(1, sizeof *r);
    if (r) {
        r->api = a;
        r->conn = c;
    }
    return r;
}

/* MHD_OPTION_URI_LOG_CALLBACK: called once per request with the request target exactly as
 * received, before libmicrohttpd percent-decodes it (it cuts the decoded path at a %00).  The
 * request state starts here, so the raw target can be judged; what is returned arrives as
 * *req_cls in on_access. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    api_req *r = req_new(cls, c);
    if (r && !api_frame_target_ok(uri, uri ? strlen(uri) : 0, r->frame_error,
                                  sizeof r->frame_error) && !r->frame_error[0])
        snprintf(r->frame_error, sizeof r->frame_error, "bad request target");
    return r;
}

typedef struct {
    api_frame_header h[API_FRAME_MAX_HEADERS];
    size_t n;
    bool too_many;
} header_list;

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    header_list *l = cls;
    if (l->n == API_FRAME_MAX_HEADERS) {
        l->too_many = true;
        return MHD_NO;
    }
    l->h[l->n++] = (api_frame_header){key, key_size, value ? value : "", value ? value_size : 0};
    return MHD_YES;
}

static void check_headers(struct MHD_Connection *c, const char *version, char *why,
                          size_t whylen)
{
    header_list *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(why, whylen, "out of memory");
        return;
    }
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, collect_header, l);
    bool http11 = version && strcmp(version, MHD_HTTP_VERSION_1_0) != 0;
    if (l->too_many)
        snprintf(why, whylen, "more than %d headers", API_FRAME_MAX_HEADERS);
    else
        api_frame_headers_ok(l->h, l->n, http11, why, whylen);
    free(l);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    kg_api *a = cls;
    api_req *r = *req_cls;
    if (!r) { /* on_uri could not allocate it */
        r = req_new(a, c);
        if (!r)
            return MHD_NO;
        *req_cls = r;
    }
    if (!r->headers_seen) {
        /* First call: headers only.  Queuing an answer on this first call makes
         * libmicrohttpd 0.9.75 answer `Connection: close` every time (keep-alive lost, about 7x
         * fewer requests per second), so only
         * a request that breaks the framing rules, or announces a body too large, is refused
         * this early. */
        r->headers_seen = true;
        r->head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
        if (!r->frame_error[0])
            check_headers(c, version, r->frame_error, sizeof r->frame_error);
        if (r->frame_error[0]) {
            r->responded = true;
            return framing_error(c, r->frame_error);
        }
        api_route_match(method, url, &r->m);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t n;
        if (cl && api_parse_int64(cl, 0, INT64_MAX, &n) == 0 && n > API_BODY_MAX)
            return too_large(r, c);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->responded)
            return MHD_YES;
        if (r->too_large || r->body_len + n > API_BODY_MAX) {
            /* A body of unannounced length (chunked) went over the limit.  MHD cannot answer
             * in the middle of an upload, so the rest is read and dropped, up to a bound past
             * which the connection is simply closed. */
            drop_body(r);
            r->too_large = true;
            r->discarded += n;
            return r->discarded > API_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 1024;
            while (cap < r->body_len + n + 1)
                cap *= 2;
            char *nb = realloc(r->body, cap);
            if (!nb)
                return MHD_NO;
            r->body = nb;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    if (r->responded)
        return MHD_YES;
    if (r->too_large)
        return too_large(r, c);
    return dispatch(a, r, c, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    api_req *r = *req_cls;
    if (!r)
        return;
    if (r->ext_free)
        r->ext_free(r->ext);
    free(r->body);
    free(r);
    *req_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* A client that goes away mid-answer (a closed dashboard tab ending its event stream) is
     * normal traffic, not a warning. */
    /* Counted per libmicrohttpd message (its format string is the key), so one flood of
     * aborted connections is a few lines and a summary, not the whole log ring. */
    kg_log_level lvl = LOG_WARN;
    if (strstr(msg, "no longer available") || strstr(msg, "reset by peer") ||
        strstr(msg, "Broken pipe") || strstr(msg, "closed by remote side"))
        lvl = LOG_DEBUG;
    kg_log_keyed(lvl, fmt, "http: %s", msg);
}

/* ------------------------------------------------------------------------------------------
 * Connection limits
 * ------------------------------------------------------------------------------------------ */

/* MHD's accept policy: refuses a new connection from a client that already holds
 * http_max_per_client (the socket is closed at once, so a flood of slow connections from one
 * address costs it its own quota, not everybody's).  Trusted proxies carry many clients: only
 * the overall limit applies to them.  The count is kept by on_connection below; between the
 * check here and the count there a few accepts may overlap (one per MHD thread). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    kg_api *a = cls;
    api_client_key k;
    if (!api_client_key_from_sockaddr(addr, &k) ||
        api_peer_is_trusted(addr, &a->cfg->trusted_proxy_nets))
        return MHD_YES;
    int open = api_limits_count(a->conns, &k);
    if (open < a->cfg->http_max_per_client)
        return MHD_YES;
    char who[INET6_ADDRSTRLEN];
    api_client_key_format(&k, who, sizeof who);
    log_warn("http: refused a connection from %s: it has %d open "
             "(KUMAGUARD_HTTP_MAX_PER_CLIENT)", who, open);
    return MHD_NO;
}

/* MHD_OPTION_NOTIFY_CONNECTION: counts every connection from start to close under its
 * client's key (kept in the connection's socket context, so the close releases exactly what
 * the start took). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    kg_api *a = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        api_client_key *k = malloc(sizeof *k);
        if (k && api_client_key_from_sockaddr(api_peer_addr(c), k) &&
            api_limits_acquire(a->conns, k, 0)) {
            *socket_context = k;
        } else {
            free(k);
            *socket_context = NULL;
        }
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        api_limits_release(a->conns, *socket_context);
        free(*socket_context);
        *socket_context = NULL;
    }
}

/* ------------------------------------------------------------------------------------------
 * Start and stop
 * ------------------------------------------------------------------------------------------ */

/* "host:port", "[v6]:port", ":port" or "*:port" (all IPv4 interfaces).  Port 0 = any free. */
static int parse_listen(const char *spec, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    memset(ss, 0, sizeof *ss);
    char host[256];
    const char *port_s;
    if (spec[0] == '[') {
        const char *close_b = strchr(spec, ']');
        if (!close_b || close_b[1] != ':' || (size_t)(close_b - spec - 1) >= sizeof host)
            goto bad;
        memcpy(host, spec + 1, (size_t)(close_b - spec - 1));
        host[close_b - spec - 1] = '\0';
        port_s = close_b + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof host)
            goto bad;
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        port_s = colon + 1;
    }
    int64_t port;
    if (api_parse_int64(port_s, 0, 65535, &port) != 0)
        goto bad;

    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_ANY);
        in4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        snprintf(err, errlen, "KUMAGUARD_LISTEN: cannot resolve host '%s'", host);
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (ss->ss_family == AF_INET)
        in4->sin_port = htons((uint16_t)port);
    else
        in6->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
bad:
    snprintf(err, errlen,
             "KUMAGUARD_LISTEN / --listen: invalid value '%s' (expected host:port or [ipv6]:port)",
             spec);
    return -1;
}

kg_api *api_start(const kg_config *cfg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (parse_listen(cfg->listen ? cfg->listen : "127.0.0.1:8080", &ss, err, errlen) != 0)
        return NULL;
    kg_api *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->cfg = cfg;
    pthread_mutex_init(&a->act_lock, NULL);
    pthread_cond_init(&a->act_cond, NULL);
    snprintf(a->web_dir, sizeof a->web_dir, "%s",
             cfg->web_dir && *cfg->web_dir ? cfg->web_dir : KG_DEFAULT_WEB_DIR);
    char st_dir[PATH_MAX + 16];
    snprintf(st_dir, sizeof st_dir, "%s/static", a->web_dir);
    if (!realpath(st_dir, a->static_root))
        a->static_root[0] = '\0';

    a->conns = api_limits_new();
    a->docs = api_cache_new(cfg);
    a->sse = api_sse_start(cfg->event_streams_max, cfg->event_streams_per_client, err, errlen);
    if (!a->sse || !a->conns || !a->docs) {
        if (!a->conns || !a->docs)
            snprintf(err, errlen, "out of memory");
        goto fail;
    }
    api_monitors_start();

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned threads = cfg->http_threads > 0 ? (unsigned)cfg->http_threads : 2;
    unsigned max_conns = cfg->http_max_connections > 0 ? (unsigned)cfg->http_max_connections
                                                        : 512;
    /* MHD's timeout is in whole seconds; it is an idle timeout (reset by every byte in either
     * direction), which also bounds how slowly a client may send its request. */
    unsigned idle_s = cfg->http_idle_timeout_ms > 0
                          ? (unsigned)((cfg->http_idle_timeout_ms + 999) / 1000) : 30;
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)threads, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)max_conns, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONNECTION_MEMORY, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)idle_s, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 256, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, a},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, a},
        {MHD_OPTION_END, 0, NULL},
    };
    a->daemon = MHD_start_daemon(flags, 0, on_accept, a, on_access, a,
                                 MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first: see MHD */
                                 MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!a->daemon) {
        snprintf(err, errlen, "cannot listen on %s (address in use or not available?)",
                 cfg->listen);
        goto fail;
    }
    log_info("http: listening on %s (port %d, %u threads; at most %u connections, %d per "
             "client, idle timeout %u s; %d event streams, %d per client)", cfg->listen,
             api_bound_port(a), threads, max_conns, cfg->http_max_per_client, idle_s,
             cfg->event_streams_max, cfg->event_streams_per_client);
    return a;
fail:
    api_sse_stop(a->sse);
    api_sse_free(a->sse);
    api_limits_free(a->conns);
    api_cache_free(a->docs);
    pthread_mutex_destroy(&a->act_lock);
    pthread_cond_destroy(&a->act_cond);
    free(a);
    return NULL;
}

int api_bound_port(const kg_api *a)
{
    if (!a || !a->daemon)
        return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return di ? (int)di->port : -1;
}

void api_stop(kg_api *a)
{
    if (!a)
        return;
    /* Order matters: end every parked connection (SSE streams and running actions; new ones
     * are refused from here on), then stop the daemon — MHD must not be stopped with
     * suspended ones.  No MHD_quiesce_daemon(): with MHD_USE_EPOLL, libmicrohttpd 0.9.75 can
     * race its own polling thread there and abort ("Failed to remove listen FD from epoll
     * set", seen under load in the simulator, which used it the same way). */
    api_sse_stop(a->sse);
    pthread_mutex_lock(&a->act_lock);
    a->stopping = true;
    while (a->actions_in_flight > 0)
        pthread_cond_wait(&a->act_cond, &a->act_lock);
    pthread_mutex_unlock(&a->act_lock);
    api_monitors_stop();
    MHD_stop_daemon(a->daemon);
    api_sse_free(a->sse);
    api_limits_free(a->conns);
    api_cache_free(a->docs); /* its responses release their snapshots */
    pthread_mutex_destroy(&a->act_lock);
    pthread_cond_destroy(&a->act_cond);
    free(a);
}
