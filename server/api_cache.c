/* api_cache.c — the big status documents, once per snapshot (see api_cache.h). */
#include "api_cache.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "api_json.h"
#include "api_respond.h"
#include "log.h"

#define GZIP_LEVEL 1 /* 1.3 MB of node JSON: ~8x smaller in ~7 ms; higher levels gain ~20 % for 3x */

/* One node's JSON as of `base` (api_cache.base->nodes[i]). */
typedef struct {
    char *node;  /* its /api/node-status entry */
    size_t node_len;
    char *cap;   /* its capacity entry */
    size_t cap_len;
} piece;

typedef struct {
    struct MHD_Response *resp; /* the newest ready response (the cache holds one reference) */
    uint64_t seq;              /* of the snapshot it was rendered from */
} slot;

struct api_cache {
    const kg_config *cfg;

    /* One renderer at a time: a thread that needs a newer response than the ready one waits
     * here, then finds it ready when another thread rendered it meanwhile. */
    pthread_mutex_t render_lock; /* base, pieces, the arrays, node_body */
    kg_snapshot *base;           /* the snapshot the pieces were rendered from (held) */
    piece *pieces;
    char *nodes, *caps;          /* "[...]" assembled from the pieces for base */
    size_t nodes_len, caps_len;
    char *node_body;             /* the /api/node-status body of snapshot node_body_seq, kept */
    size_t node_body_len;        /* for the other encoding of the same snapshot */
    uint64_t node_body_seq;

    pthread_mutex_t lock; /* out[][] */
    slot out[API_DOC_COUNT][2]; /* [kind][gzip] */
};

api_cache *api_cache_new(const kg_config *cfg)
{
    api_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cfg = cfg;
    pthread_mutex_init(&c->render_lock, NULL);
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

static void free_pieces(piece *p, int n)
{
    for (int i = 0; p && i < n; i++) {
        free(p[i].node);
        free(p[i].cap);
    }
    free(p);
}

void api_cache_free(api_cache *c)
{
    if (!c)
        return;
    for (int k = 0; k < API_DOC_COUNT; k++)
        for (int g = 0; g < 2; g++)
            if (c->out[k][g].resp)
                MHD_destroy_response(c->out[k][g].resp);
    free_pieces(c->pieces, c->base ? c->base->n_nodes : 0);
    snapshot_release(c->base);
    free(c->nodes);
    free(c->caps);
    free(c->node_body);
    pthread_mutex_destroy(&c->render_lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* ---- per-node pieces ---------------------------------------------------------------------- */

static char *dump_put(json_object *o, size_t *len)
{
    char *s = o ? api_json_dump(o, len) : NULL;
    json_object_put(o);
    return s;
}

static bool render_piece(piece *p, const kg_node_view *v, int default_limit)
{
    p->node = dump_put(api_json_node(v, default_limit), &p->node_len);
    p->cap = dump_put(api_json_capacity_node(v, default_limit), &p->cap_len);
    return p->node && p->cap;
}

/* "[" p0 "," p1 ... "]" of one member of the pieces. */
static char *assemble(const piece *p, int n, bool cap, size_t *len)
{
    size_t total = 2 + (n > 0 ? (size_t)n - 1 : 0);
    for (int i = 0; i < n; i++)
        total += cap ? p[i].cap_len : p[i].node_len;
    char *out = malloc(total + 1);
    if (!out)
        return NULL;
    size_t at = 0;
    out[at++] = '[';
    for (int i = 0; i < n; i++) {
        if (i)
            out[at++] = ',';
        const char *s = cap ? p[i].cap : p[i].node;
        size_t l = cap ? p[i].cap_len : p[i].node_len;
        memcpy(out + at, s, l);
        at += l;
    }
    out[at++] = ']';
    out[at] = '\0';
    *len = at;
    return out;
}

/* Brings the pieces to snapshot s: a node whose view is byte-for-byte the one of the same id
 * in the previous base keeps its pieces, every other node is rendered.  Both node lists are
 * sorted by id (snapshot.h), so this is one merge pass; an unsorted list only costs renders.
 * Under render_lock.  -1 on allocation failure (the previous state is kept). */
static int update_pieces(api_cache *c, kg_snapshot *s)
{
    if (c->base == s)
        return 0;
    int n = s->n_nodes;
    piece *np = calloc((size_t)n + 1, sizeof *np);
    if (!np)
        return -1;
    const kg_snapshot *b = c->base;
    bool same_limit = b && b->monitor_limit == s->monitor_limit;
    int j = 0, nb = b ? b->n_nodes : 0;
    for (int i = 0; i < n; i++) {
        const kg_node_view *v = &s->nodes[i];
        while (j < nb && strncmp(b->nodes[j].id, v->id, sizeof v->id) < 0)
            j++;
        if (same_limit && j < nb && c->pieces[j].node &&
            memcmp(&b->nodes[j], v, sizeof *v) == 0) {
            np[i] = c->pieces[j];
            memset(&c->pieces[j], 0, sizeof c->pieces[j]);
            j++;
            continue;
        }
        if (!render_piece(&np[i], v, s->monitor_limit)) {
            free_pieces(np, n);
            return -1;
        }
    }
    size_t nl = 0, cl = 0;
    char *nodes = assemble(np, n, false, &nl), *caps = assemble(np, n, true, &cl);
    if (!nodes || !caps) {
        free(nodes);
        free(caps);
        free_pieces(np, n);
        return -1;
    }
    free_pieces(c->pieces, nb);
    snapshot_release(c->base);
    free(c->nodes);
    free(c->caps);
    c->base = snapshot_retain(s);
    c->pieces = np;
    c->nodes = nodes;
    c->nodes_len = nl;
    c->caps = caps;
    c->caps_len = cl;
    return 0;
}

/* Under render_lock. */
static char *render_locked(api_cache *c, api_doc_kind kind, kg_snapshot *s, size_t *len)
{
    api_prerendered pre = {0};
    if (update_pieces(c, s) == 0)
        pre = (api_prerendered){c->nodes, c->nodes_len, c->caps, c->caps_len};
    /* else (out of memory): rendered whole by api_json.c below */
    json_object *o = kind == API_DOC_SYSTEM_STATUS ? api_doc_system_status_pre(s, c->cfg, &pre)
                                                   : api_doc_node_status_pre(s, &pre);
    return dump_put(o, len);
}

char *api_cache_render(api_cache *c, api_doc_kind kind, kg_snapshot *s, size_t *len)
{
    pthread_mutex_lock(&c->render_lock);
    char *body = render_locked(c, kind, s, len);
    pthread_mutex_unlock(&c->render_lock);
    return body;
}

/* ---- responses ---------------------------------------------------------------------------- */

static char *gzip_body(const char *in, size_t len, size_t *out_len)
{
    if (len > UINT_MAX / 2)
        return NULL;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    uLong bound = deflateBound(&z, (uLong)len);
    unsigned char *out = malloc(bound);
    int rc = Z_MEM_ERROR;
    if (out) {
        z.next_in = (unsigned char *)in;
        z.avail_in = (uInt)len;
        z.next_out = out;
        z.avail_out = (uInt)bound;
        rc = deflate(&z, Z_FINISH);
    }
    *out_len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    unsigned char *fit = realloc(out, *out_len ? *out_len : 1);
    return (char *)(fit ? fit : out);
}

static void release_snapshot_cb(void *cls)
{
    snapshot_release(cls);
}

/* The system-status body of s, kept in s->cached_json (the first render installs it; the
 * compare-exchange only matters if someone outside the cache installed one).  Under
 * render_lock. */
static const char *system_status_body(api_cache *c, kg_snapshot *s)
{
    char *body = atomic_load_explicit(&s->cached_json, memory_order_acquire);
    if (body)
        return body;
    size_t len;
    char *fresh = render_locked(c, API_DOC_SYSTEM_STATUS, s, &len);
    if (!fresh)
        return NULL;
    char *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&s->cached_json, &expected, fresh,
                                                memory_order_acq_rel, memory_order_acquire))
        return fresh;
    free(fresh);
    return expected;
}

/* The node-status body of s, kept until the next snapshot's (a plain and a gzip client of
 * the same snapshot cost one render).  Borrowed.  Under render_lock. */
static const char *node_status_body(api_cache *c, kg_snapshot *s, size_t *len)
{
    if (!c->node_body || c->node_body_seq != s->seq) {
        size_t l;
        char *fresh = render_locked(c, API_DOC_NODE_STATUS, s, &l);
        if (!fresh)
            return NULL;
        free(c->node_body);
        c->node_body = fresh;
        c->node_body_len = l;
        c->node_body_seq = s->seq;
    }
    *len = c->node_body_len;
    return c->node_body;
}

/* A new response carrying `kind` as of s; NULL on allocation failure.  Under render_lock. */
static struct MHD_Response *build(api_cache *c, api_doc_kind kind, kg_snapshot *s, bool gzip)
{
    struct MHD_Response *resp = NULL;
    size_t len = 0;
    const char *body = NULL;
    if (kind == API_DOC_SYSTEM_STATUS) {
        body = system_status_body(c, s);
        len = body ? strlen(body) : 0;
    } else {
        body = node_status_body(c, s, &len);
    }
    if (!body)
        return NULL;
    if (gzip) {
        size_t zl;
        char *z = gzip_body(body, len, &zl);
        resp = z ? MHD_create_response_from_buffer(zl, z, MHD_RESPMEM_MUST_FREE) : NULL;
        if (z && !resp)
            free(z);
    } else if (kind == API_DOC_SYSTEM_STATUS) {
        /* the response borrows the body and keeps s (which owns it) alive */
        resp = MHD_create_response_from_buffer_with_free_callback_cls(
            len, (void *)body, release_snapshot_cb, snapshot_retain(s));
        if (!resp)
            snapshot_release(s);
    } else {
        /* node_body is replaced at the next snapshot while sends may still run: a copy */
        resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    }
    if (!resp)
        return NULL;
    api_add_common_headers(resp);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "Vary", "Accept-Encoding");
    if (gzip)
        MHD_add_response_header(resp, "Content-Encoding", "gzip");
    return resp;
}

/* Queues the slot's response when it is as new as s.  Under lock.  false = not ready. */
static bool queue_ready(slot *sl, const kg_snapshot *s, struct MHD_Connection *conn,
                        enum MHD_Result *ret)
{
    if (!sl->resp || sl->seq < s->seq)
        return false;
    /* queued under the lock: MHD takes its own reference before a swap can drop ours */
    *ret = MHD_queue_response(conn, MHD_HTTP_OK, sl->resp);
    return true;
}

enum MHD_Result api_cache_queue(api_cache *c, api_doc_kind kind, kg_snapshot *s, bool gzip,
                                struct MHD_Connection *conn)
{
    slot *sl = &c->out[kind][gzip ? 1 : 0];
    enum MHD_Result ret = MHD_NO;
    pthread_mutex_lock(&c->lock);
    bool done = queue_ready(sl, s, conn, &ret);
    pthread_mutex_unlock(&c->lock);
    if (done)
        return ret;

    /* Not ready: one thread renders, the others wait for it here rather than serve a document
     * older than the snapshot they were asked under (a client that just acted must see it). */
    pthread_mutex_lock(&c->render_lock);
    pthread_mutex_lock(&c->lock);
    done = queue_ready(sl, s, conn, &ret);
    pthread_mutex_unlock(&c->lock);
    if (done) {
        pthread_mutex_unlock(&c->render_lock);
        return ret;
    }
    struct MHD_Response *resp = build(c, kind, s, gzip), *old = NULL;
    pthread_mutex_unlock(&c->render_lock);
    if (!resp) {
        log_warn("api: out of memory rendering %s",
                 kind == API_DOC_SYSTEM_STATUS ? "/api/system-status" : "/api/node-status");
        return MHD_NO;
    }
    pthread_mutex_lock(&c->lock);
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    if (!sl->resp || sl->seq < s->seq) {
        old = sl->resp;
        sl->resp = resp; /* the cache takes over our reference */
        sl->seq = s->seq;
        resp = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    if (old)
        MHD_destroy_response(old); /* in-flight sends keep their own references */
    if (resp)
        MHD_destroy_response(resp); /* MHD keeps the one queued above */
    return ret;
}
