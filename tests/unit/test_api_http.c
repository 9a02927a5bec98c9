/* test_api_http.c — contract tests of the HTTP API over real sockets: the real api_start() on a
 * free loopback port, a synthetic published snapshot, a fake controller thread answering the
 * mailbox, and libcurl as the client.  One test per endpoint and rule: status, content type,
 * JSON shape and types, auth (missing token, wrong token, loopback without token, proxied),
 * 405 with Allow, 404, 413, cookies of the fixed-node endpoints, static files, SSE. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <ifaddrs.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "api.h"
#include "api_fixture.h"
#include "config.h"
#include "events.h"
#include "log.h"
#include "mailbox.h"
#include "snapshot.h"

#define TOKEN "test-token-0123456789"

/* ------------------------------------------------------------------------------------------
 * Fixture: server, snapshot, fake controller, web dir
 * ------------------------------------------------------------------------------------------ */

static kg_config cfg;
static kg_api *api;
static int port;
static char tmpdir[256];

static pthread_t ctl_thread;
static atomic_bool ctl_stop;
static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static int ctl_calls;
static kg_msg_kind ctl_kind;
static char ctl_node[KG_NODE_ID_MAX + 1];
static char ctl_actor[64];
static int ctl_status = 202;
static const char *ctl_error = "";
static const char *ctl_detail = "queued";

static void *fake_controller(void *arg)
{
    (void)arg;
    while (!atomic_load(&ctl_stop)) {
        kg_msg *m = mailbox_wait(20);
        if (!m)
            continue;
        pthread_mutex_lock(&ctl_lock);
        ctl_calls++;
        ctl_kind = m->kind;
        snprintf(ctl_node, sizeof ctl_node, "%s", m->node);
        snprintf(ctl_actor, sizeof ctl_actor, "%s", m->actor);
        int st = ctl_status;
        const char *e = ctl_error, *d = ctl_detail;
        pthread_mutex_unlock(&ctl_lock);
        reply_finish(m->reply, st, e, d);
        mailbox_free(m);
    }
    return NULL;
}

static void write_file(const char *rel, const char *content)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(content, f);
    fclose(f);
}

static void make_web_dir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kg-api-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    char p[512];
    const char *dirs[] = {"web", "web/static", "web/static/css", "web/templates", "state"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, dirs[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
    }
    write_file("web/static/app.js", "console.log('kumaguard');\n");
    write_file("web/static/css/site.css", "body{color:#000}\n");
    write_file("web/templates/dashboard.html", "<!DOCTYPE html><title>kumaguard</title>\n");
    write_file("secret.txt", "outside the static dir\n");
    char target[512];
    snprintf(target, sizeof target, "%s/secret.txt", tmpdir);
    snprintf(p, sizeof p, "%s/web/static/link.txt", tmpdir);
    cr_assert_eq(symlink(target, p), 0);
}

static void start_server(const char *token, const char *listen)
{
    char webdir[300];
    snprintf(webdir, sizeof webdir, "%s/web", tmpdir);
    char *argv[16];
    int argc = 0;
    argv[argc++] = "kumaguard";
    argv[argc++] = "--listen";
    argv[argc++] = (char *)listen;
    argv[argc++] = "--web-dir";
    argv[argc++] = webdir;
    argv[argc++] = "--http-threads";
    argv[argc++] = "2";
    if (token) {
        argv[argc++] = "--api-token";
        argv[argc++] = (char *)token;
    }
    argv[argc] = NULL;
    char *envp[] = {NULL};
    char err[256];
    cr_assert_eq(config_load(&cfg, argc, argv, envp, stdout, err, sizeof err), 0, "%s", err);
    api = api_start(&cfg, err, sizeof err);
    cr_assert_not_null(api, "api_start: %s", err);
    port = api_bound_port(api);
    cr_assert_gt(port, 0);
}

static void setup_common(const char *token, bool publish)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    make_web_dir();
    if (publish)
        snapshot_publish(fixture_snapshot(10));
    atomic_store(&ctl_stop, false);
    cr_assert_eq(pthread_create(&ctl_thread, NULL, fake_controller, NULL), 0);
    start_server(token, "127.0.0.1:0");
}

static void setup_open(void) { setup_common(NULL, true); }
static void setup_token(void) { setup_common(TOKEN, true); }
static void setup_empty(void) { setup_common(NULL, false); }

static void teardown(void)
{
    api_stop(api);
    api = NULL;
    atomic_store(&ctl_stop, true);
    pthread_join(ctl_thread, NULL);
    config_free(&cfg);
    snapshot_clear();
    events_close();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
    curl_global_cleanup();
}

/* ------------------------------------------------------------------------------------------
 * Client
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    long status;
    char *body;
    size_t len;
    char ctype[128];
    char allow[64];
    char cookie[256];
    char www_auth[128];
    char etag[64];
    char cache_control[64];
    char content_encoding[32];
    char vary[64];
    bool any_cors;
} resp_t;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp_t *r = ud;
    size_t add = sz * n;
    char *nb = realloc(r->body, r->len + add + 1);
    if (!nb)
        return 0;
    r->body = nb;
    memcpy(r->body + r->len, p, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

static void copy_header(const char *line, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    if (n <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1;
    while (*v == ' ')
        v++;
    size_t vl = n - (size_t)(v - line);
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    snprintf(out, outlen, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp_t *r = ud;
    size_t len = sz * n;
    copy_header(p, len, "Content-Type", r->ctype, sizeof r->ctype);
    copy_header(p, len, "Allow", r->allow, sizeof r->allow);
    copy_header(p, len, "Set-Cookie", r->cookie, sizeof r->cookie);
    copy_header(p, len, "WWW-Authenticate", r->www_auth, sizeof r->www_auth);
    copy_header(p, len, "ETag", r->etag, sizeof r->etag);
    copy_header(p, len, "Cache-Control", r->cache_control, sizeof r->cache_control);
    copy_header(p, len, "Content-Encoding", r->content_encoding, sizeof r->content_encoding);
    copy_header(p, len, "Vary", r->vary, sizeof r->vary);
    if (len > 12 && strncasecmp(p, "Access-Control", 14) == 0)
        r->any_cors = true;
    return len;
}

/* One request.  headers: NULL-terminated list of "Name: value".  body may be NULL. */
static resp_t http_to(const char *host, const char *method, const char *path, const char *body,
                      size_t body_len, const char *const *headers)
{
    resp_t r = {0};
    CURL *h = curl_easy_init();
    cr_assert_not_null(h);
    char url[512];
    snprintf(url, sizeof url, "http://%s:%d%s", host, port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(body ? body_len : 0));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    struct curl_slist *hl = NULL;
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    if (hl)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    CURLcode rc = curl_easy_perform(h);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (!r.body) {
        r.body = calloc(1, 1);
        r.len = 0;
    }
    return r;
}

static resp_t http(const char *method, const char *path, const char *body,
                   const char *const *headers)
{
    return http_to("127.0.0.1", method, path, body, body ? strlen(body) : 0, headers);
}

static void resp_free(resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

static json_object *json_body(const resp_t *r)
{
    cr_assert_str_eq(r->ctype, "application/json", "content type '%s'", r->ctype);
    json_object *o = json_tokener_parse(r->body);
    cr_assert_not_null(o, "not JSON: %s", r->body);
    cr_assert(json_object_is_type(o, json_type_object), "not an object: %s", r->body);
    return o;
}

static json_object *jget(json_object *o, const char *key)
{
    json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, key, &v), "missing %s in %s", key,
              json_object_to_json_string(o));
    return v;
}

/* Status + JSON error document with the expected "error" code. */
static void assert_error(resp_t *r, long status, const char *error)
{
    cr_assert_eq(r->status, status, "status %ld, expected %ld: %s", r->status, status, r->body);
    json_object *o = json_body(r);
    cr_assert_str_eq(json_object_get_string(jget(o, "error")), error);
    cr_assert(json_object_is_type(jget(o, "detail"), json_type_string));
    json_object_put(o);
}

static int controller_calls(void)
{
    pthread_mutex_lock(&ctl_lock);
    int n = ctl_calls;
    pthread_mutex_unlock(&ctl_lock);
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------------------------ */

TestSuite(http_open, .init = setup_open, .fini = teardown, .timeout = 60);
TestSuite(http_token, .init = setup_token, .fini = teardown, .timeout = 60);
TestSuite(http_empty, .init = setup_empty, .fini = teardown, .timeout = 60);

/* Each read endpoint: 200, application/json, an object with one characteristic typed member. */
Test(http_open, every_read_endpoint_answers_typed_json_under_both_prefixes)
{
    static const struct {
        const char *path, *key;
        json_type type;
    } reads[] = {
        {"/api/system-status", "nodes", json_type_array},
        {"/api/node-status", "nodes", json_type_array},
        {"/api/load-balancer-status", "reloads_ok", json_type_int},
        {"/api/health-check-status", "latency_histogram", json_type_object},
        {"/api/fault-detection-status", "stranded_nodes", json_type_array},
        {"/api/rebalancing-status", "progress_percent", json_type_double},
        {"/api/health-status", "status", json_type_string},
        {"/lb/health", "nodes_routable", json_type_int},
        {"/lb/capacity", "total", json_type_object},
        {"/lb/ping", "pong", json_type_boolean},
        {"/lb/available-nodes", "available_nodes", json_type_array},
        {"/lb/fixed-node-status", "has_fixed_node", json_type_boolean},
        {"/health", "leader", json_type_boolean},
        {"/api/debug-config", "KUMAGUARD_LISTEN", json_type_string},
    };
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        for (int prefix = 0; prefix < 2; prefix++) {
            char path[128];
            if (prefix == 1 && strncmp(reads[i].path, "/api/", 5) != 0)
                continue;
            snprintf(path, sizeof path, "%s%s", prefix ? "/lb/" : "",
                     prefix ? reads[i].path + 5 : reads[i].path);
            resp_t r = http("GET", path, NULL, NULL);
            cr_assert_eq(r.status, 200, "%s: %ld %s", path, r.status, r.body);
            json_object *o = json_body(&r);
            json_object *v = jget(o, reads[i].key);
            /* json_type_double stands for "a JSON number": 25 and 25.5 are both numbers */
            bool ok = json_object_is_type(v, reads[i].type) ||
                      (reads[i].type == json_type_double && json_object_is_type(v, json_type_int));
            cr_assert(ok, "%s: %s has type %s", path,
                      reads[i].key, json_type_to_name(json_object_get_type(v)));
            cr_assert_str_eq(r.cache_control, "no-store", "%s", path);
            json_object_put(o);
            resp_free(&r);
        }
    }
}

Test(http_open, system_status_is_cached_per_snapshot_and_follows_publishes)
{
    resp_t a = http("GET", "/api/system-status", NULL, NULL);
    resp_t b = http("GET", "/api/system-status", NULL, NULL);
    cr_assert_eq(a.status, 200);
    cr_assert_str_eq(a.body, b.body, "same snapshot, same bytes");
    kg_snapshot *cur = snapshot_acquire();
    char *cached = atomic_load(&cur->cached_json);
    cr_assert_not_null(cached, "the body is cached in the snapshot");
    cr_assert_str_eq(cached, a.body);
    snapshot_release(cur);

    kg_snapshot *s = fixture_snapshot(10);
    s->nodes[0].effective_monitors = 777;
    snapshot_publish(s);
    resp_t c = http("GET", "/api/system-status", NULL, NULL);
    json_object *o = json_body(&c);
    json_object *n0 = json_object_array_get_idx(jget(o, "nodes"), 0);
    cr_assert_eq(json_object_get_int(jget(n0, "monitors_effective")), 777);
    cr_assert_eq(json_object_get_int(jget(o, "snapshot_seq")), 2);
    json_object_put(o);
    resp_free(&a);
    resp_free(&b);
    resp_free(&c);
}

/* Inflates a gzip body (malloc'd, NUL-terminated); NULL when it is not valid gzip. */
static char *gunzip(const char *in, size_t len, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + 15) != Z_OK)
        return NULL;
    size_t cap = len * 8 + 1024;
    char *out = malloc(cap);
    z.next_in = (unsigned char *)in;
    z.avail_in = (uInt)len;
    int rc = Z_OK;
    while (out && rc == Z_OK) {
        if (z.total_out + 1 >= cap) {
            char *grown = realloc(out, cap * 2);
            if (!grown)
                break;
            out = grown;
            cap *= 2;
        }
        z.next_out = (unsigned char *)out + z.total_out;
        z.avail_out = (uInt)(cap - 1 - z.total_out);
        rc = inflate(&z, Z_NO_FLUSH);
        if (rc == Z_BUF_ERROR && z.avail_out > 0)
            break; /* truncated input */
        if (rc == Z_BUF_ERROR)
            rc = Z_OK;
    }
    *out_len = z.total_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    out[*out_len] = '\0';
    return out;
}

/* The two big documents are shared per snapshot, and gzip-encoded for clients that accept it
 * (a dashboard polling 1,000 nodes gets ~170 KB instead of 1.4 MB). */
Test(http_open, big_documents_gzip_for_clients_that_accept_it)
{
    const char *paths[] = {"/api/node-status", "/api/system-status", "/lb/node-status"};
    const char *gz[] = {"Accept-Encoding: gzip, deflate, br", NULL};
    const char *refused[] = {"Accept-Encoding: deflate, gzip;q=0", NULL};
    for (int i = 0; i < 3; i++) {
        resp_t plain = http("GET", paths[i], NULL, NULL);
        resp_t z = http("GET", paths[i], NULL, gz);
        resp_t no = http("GET", paths[i], NULL, refused);
        cr_assert_eq(z.status, 200);
        cr_expect_str_eq(z.content_encoding, "gzip", "%s", paths[i]);
        cr_expect(strstr(z.vary, "Accept-Encoding"), "%s: Vary: %s", paths[i], z.vary);
        cr_expect(strstr(plain.vary, "Accept-Encoding"), "%s: Vary on the plain one too",
                  paths[i]);
        cr_expect_str_eq(plain.content_encoding, "");
        cr_expect_str_eq(no.content_encoding, "", "gzip;q=0 refuses gzip");
        cr_expect_str_eq(no.body, plain.body);
        size_t n = 0;
        char *inflated = gunzip(z.body, z.len, &n);
        cr_assert_not_null(inflated, "%s: not gzip", paths[i]);
        cr_expect_eq(n, plain.len);
        cr_expect_str_eq(inflated, plain.body, "%s: same document either way", paths[i]);
        free(inflated);
        resp_free(&plain);
        resp_free(&z);
        resp_free(&no);
    }
}

Test(http_open, node_status_follows_publishes_plain_and_gzip)
{
    const char *gz[] = {"Accept-Encoding: gzip", NULL};
    resp_t a = http("GET", "/api/node-status", NULL, NULL);
    resp_t az = http("GET", "/api/node-status", NULL, gz);
    kg_snapshot *s = fixture_snapshot(10);
    s->nodes[3].effective_monitors = 4321;
    snprintf(s->nodes[5].last_failure_reason, sizeof s->nodes[5].last_failure_reason, "HTTP 503");
    snapshot_publish(s);
    resp_t b = http("GET", "/api/node-status", NULL, NULL);
    resp_t bz = http("GET", "/api/node-status", NULL, gz);
    cr_assert_str_neq(a.body, b.body);
    json_object *o = json_tokener_parse(b.body);
    cr_assert_not_null(o);
    json_object *n3 = json_object_array_get_idx(jget(o, "nodes"), 3);
    json_object *n5 = json_object_array_get_idx(jget(o, "nodes"), 5);
    cr_expect_eq(json_object_get_int(jget(n3, "monitors_effective")), 4321);
    cr_expect_str_eq(json_object_get_string(jget(n5, "last_failure_reason")), "HTTP 503");
    json_object_put(o);
    size_t n = 0;
    char *inflated = gunzip(bz.body, bz.len, &n);
    cr_assert_not_null(inflated);
    cr_expect_str_eq(inflated, b.body, "the gzip body follows the publish too");
    free(inflated);
    resp_free(&a);
    resp_free(&az);
    resp_free(&b);
    resp_free(&bz);
}

/* Several clients at once (plain and gzip, both big documents) while snapshots are published
 * under them: every answer is whole (gzip that inflates, JSON that parses), carries the node
 * data of the snapshot it names, and is never older than the snapshot that was current when
 * the request was sent (a client that just acted must see its action).  Checks run in the
 * client threads and are counted; Criterion asserts only in the main thread. */
typedef struct {
    int id;
    int requests;
    int failures;
    char why[200];
} race_client_t;

static atomic_ullong race_current; /* seq of the newest published snapshot */
static atomic_int race_requests;
static atomic_bool race_stop;

static size_t race_body(char *p, size_t sz, size_t n, void *ud)
{
    resp_t *r = ud;
    char *grown = realloc(r->body, r->len + sz * n + 1);
    if (!grown)
        return 0;
    r->body = grown;
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = '\0';
    return sz * n;
}

static void race_fail(race_client_t *c, const char *why, long long a, long long b)
{
    if (!c->failures++)
        snprintf(c->why, sizeof c->why, "client %d: %s (%lld, %lld)", c->id, why, a, b);
}

static void race_one(race_client_t *c, CURL *h, bool gz, bool node_status)
{
    resp_t r = {0};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port,
             node_status ? "/api/node-status" : "/api/system-status");
    struct curl_slist *hl = gz ? curl_slist_append(NULL, "Accept-Encoding: gzip") : NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, race_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    unsigned long long before = atomic_load(&race_current);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    c->requests++;
    atomic_fetch_add(&race_requests, 1);
    char *text = r.body;
    size_t n = r.len;
    if (rc != CURLE_OK || status != 200 || !r.body) {
        race_fail(c, "request failed (curl code, HTTP status)", rc, status);
    } else if (gz && !(text = gunzip(r.body, r.len, &n))) {
        race_fail(c, "gzip body does not inflate", (long long)r.len, 0);
    } else {
        json_object *o = json_tokener_parse(text);
        json_object *seq = NULL, *nodes = NULL, *eff = NULL;
        if (!o || !json_object_object_get_ex(o, "snapshot_seq", &seq) ||
            !json_object_object_get_ex(o, "nodes", &nodes) ||
            !json_object_object_get_ex(json_object_array_get_idx(nodes, 0),
                                       "monitors_effective", &eff)) {
            race_fail(c, "not the whole document", (long long)n, gz);
        } else {
            long long got = json_object_get_int64(seq);
            if (got < (long long)before)
                race_fail(c, "older than the snapshot current at the request", got,
                          (long long)before);
            /* the test's snapshots put their own seq in node 0 (the first one did not) */
            if (got > 1 && json_object_get_int64(eff) != got)
                race_fail(c, "node data of another snapshot", json_object_get_int64(eff), got);
        }
        json_object_put(o);
    }
    if (text != r.body)
        free(text);
    free(r.body);
}

static void *race_client(void *arg)
{
    race_client_t *c = arg;
    CURL *h = curl_easy_init();
    for (int i = 0; h && !atomic_load(&race_stop); i++)
        race_one(c, h, (i + c->id) % 2 == 0, (i / 2 + c->id) % 2 == 0);
    if (!h)
        race_fail(c, "curl_easy_init", 0, 0);
    curl_easy_cleanup(h);
    return NULL;
}

Test(http_open, big_documents_stay_whole_and_current_under_concurrent_clients)
{
    enum { CLIENTS = 6, PUBLISHES = 60 };
    kg_snapshot *cur = snapshot_acquire();
    atomic_store(&race_current, cur->seq);
    snapshot_release(cur);
    race_client_t cl[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (race_client_t){.id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, race_client, &cl[i]), 0);
    }
    /* at least PUBLISHES, and on until the clients made a fair number of requests */
    for (int p = 0; p < PUBLISHES || (atomic_load(&race_requests) < 10 * CLIENTS && p < 3000);
         p++) {
        kg_snapshot *s = fixture_snapshot(300);
        cr_assert_not_null(s);
        unsigned long long next = atomic_load(&race_current) + 1; /* the only publisher */
        s->nodes[0].effective_monitors = (int)next;
        s->nodes[p % 300].consecutive_successes = p; /* and one more node changes */
        snapshot_publish(s);
        atomic_store(&race_current, next);
        usleep(3000 + (p % 4) * 4000);
    }
    atomic_store(&race_stop, true);
    int requests = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        requests += cl[i].requests;
        cr_expect_eq(cl[i].failures, 0, "%d failures of %d; first: %s", cl[i].failures,
                     cl[i].requests, cl[i].why);
    }
    cr_expect_geq(requests, 10 * CLIENTS, "the clients overlapped the publishes");
}

Test(http_open, head_has_headers_and_no_body)
{
    resp_t r = http("HEAD", "/api/node-status", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.ctype, "application/json");
    cr_assert_eq(r.len, 0);
    resp_free(&r);
}

Test(http_open, keep_alive_is_kept_for_reads)
{
    CURL *h = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/system-status", port);
    resp_t r = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    cr_assert_eq(curl_easy_perform(h), CURLE_OK);
    cr_assert_eq(curl_easy_perform(h), CURLE_OK);
    long connects = -1;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
    cr_assert_eq(connects, 0, "the second request reused the connection");
    curl_easy_cleanup(h);
    resp_free(&r);
}

Test(http_open, metrics_is_prometheus_text)
{
    resp_t r = http("GET", "/metrics", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
    cr_assert_not_null(strstr(r.body, "# TYPE kumaguard_failovers_total counter\n"));
    cr_assert_not_null(strstr(r.body, "kumaguard_node_monitors{node=\"node09\"} 40\n"));
    cr_assert_not_null(strstr(r.body, "kumaguard_probe_duration_seconds_bucket{le=\"+Inf\"} 38\n"));
    resp_free(&r);
}

Test(http_open, unknown_path_is_404_json)
{
    resp_t r = http("GET", "/api/nope", NULL, NULL);
    assert_error(&r, 404, "not_found");
    resp_free(&r);
    r = http("GET", "/api/v1/health", NULL, NULL);
    assert_error(&r, 404, "not_found");
    resp_free(&r);
}

Test(http_open, wrong_method_is_405_with_allow)
{
    const char *actions[] = {"/api/update-loads", "/api/trigger-health-check",
                             "/api/trigger-rebalancing", "/api/force-rebalance-all",
                             "/api/cancel-rebalancing", "/api/nodes/node01/drain",
                             "/api/nodes/node01/maintenance", "/api/nodes/node01/enable",
                             "/lb/trigger-rebalancing", "/lb/set-fixed-node"};
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        resp_t r = http("GET", actions[i], NULL, NULL);
        assert_error(&r, 405, "method_not_allowed");
        cr_assert_str_eq(r.allow, "POST", "%s", actions[i]);
        resp_free(&r);
    }
    cr_assert_eq(controller_calls(), 0, "a GET never reaches the controller");
    resp_t r = http("POST", "/api/system-status", "", NULL);
    assert_error(&r, 405, "method_not_allowed");
    cr_assert_str_eq(r.allow, "GET, HEAD");
    resp_free(&r);
    r = http("DELETE", "/api/node-status", NULL, NULL);
    assert_error(&r, 405, "method_not_allowed");
    resp_free(&r);
}

Test(http_open, bodies_over_the_limit_are_413)
{
    size_t big = 70 * 1024;
    char *body = malloc(big);
    memset(body, 'x', big);
    resp_t r = http_to("127.0.0.1", "POST", "/api/trigger-rebalancing", body, big, NULL);
    assert_error(&r, 413, "payload_too_large");
    resp_free(&r);
    /* unannounced length: chunked transfer */
    const char *chunked[] = {"Transfer-Encoding: chunked", NULL};
    r = http_to("127.0.0.1", "POST", "/lb/set-fixed-node", body, big, chunked);
    assert_error(&r, 413, "payload_too_large");
    resp_free(&r);
    free(body);
    cr_assert_eq(controller_calls(), 0);
}

Test(http_open, failover_history_filters_and_pages)
{
    char err[256], state[300];
    snprintf(state, sizeof state, "%s/state", tmpdir);
    cr_assert_eq(events_open(state, err, sizeof err), 0, "%s", err);
    for (int i = 1; i <= 6; i++) {
        kg_event e;
        fixture_event(&e, 0, i % 2 ? EV_FAILOVER : EV_REVERT, i <= 3 ? "node01" : "node02",
                      "a", "b", i);
        e.id = 0;
        cr_assert_eq(events_append(&e), 0);
    }
    resp_t r = http("GET", "/api/failover-history?kind=failover", NULL, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = json_body(&r);
    json_object *ev = jget(o, "events");
    cr_assert_eq(json_object_array_length(ev), 3);
    for (size_t i = 0; i < 3; i++)
        cr_assert_str_eq(json_object_get_string(jget(json_object_array_get_idx(ev, i), "kind")),
                         "failover");
    json_object_put(o);
    resp_free(&r);

    r = http("GET", "/lb/failover-history?node=node02&limit=2", NULL, NULL);
    o = json_body(&r);
    ev = jget(o, "events");
    cr_assert_eq(json_object_array_length(ev), 2);
    int64_t first = json_object_get_int64(jget(json_object_array_get_idx(ev, 0), "id"));
    int64_t next = json_object_get_int64(jget(o, "next_before"));
    cr_assert_gt(first, next, "newest first");
    json_object_put(o);
    resp_free(&r);

    char path[128];
    snprintf(path, sizeof path, "/api/failover-history?node=node02&limit=2&before=%lld",
             (long long)next);
    r = http("GET", path, NULL, NULL);
    o = json_body(&r);
    cr_assert_eq(json_object_array_length(jget(o, "events")), 1, "the rest of node02's events");
    json_object_put(o);
    resp_free(&r);

    const char *bad[] = {"/api/failover-history?limit=0", "/api/failover-history?kind=boom",
                         "/api/failover-history?since=tomorrow",
                         "/api/failover-history?node=%27x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = http("GET", bad[i], NULL, NULL);
        assert_error(&r, 400, "bad_request");
        resp_free(&r);
    }
}

Test(http_open, debug_config_redacts_secrets)
{
    resp_t r = http("GET", "/api/debug-config", NULL, NULL);
    cr_assert_eq(r.status, 200);
    json_object *o = json_body(&r);
    cr_assert_str_eq(json_object_get_string(jget(o, "KUMAGUARD_LISTEN")), "127.0.0.1:0");
    json_object_put(o);
    resp_free(&r);
}

Test(http_token, debug_config_never_shows_the_token)
{
    resp_t r = http("GET", "/api/debug-config", NULL, NULL);
    assert_error(&r, 401, "unauthorized"); /* it names hosts, users and commands */
    resp_free(&r);
    const char *right[] = {"Authorization: Bearer " TOKEN, NULL};
    r = http("GET", "/api/debug-config", NULL, right);
    cr_assert_eq(r.status, 200);
    cr_assert_null(strstr(r.body, TOKEN));
    cr_assert_not_null(strstr(r.body, "(redacted)"));
    resp_free(&r);
}

Test(http_empty, before_the_first_snapshot_reads_are_503)
{
    resp_t r = http("GET", "/health", NULL, NULL);
    cr_assert_eq(r.status, 503);
    json_object *o = json_body(&r);
    cr_assert_str_eq(json_object_get_string(jget(o, "status")), "starting");
    json_object_put(o);
    resp_free(&r);
    r = http("GET", "/api/system-status", NULL, NULL);
    assert_error(&r, 503, "starting");
    resp_free(&r);
    r = http("GET", "/lb/ping", NULL, NULL);
    cr_assert_eq(r.status, 200, "ping answers whatever the state");
    resp_free(&r);
}

/* ------------------------------------------------------------------------------------------
 * Actions and authentication
 * ------------------------------------------------------------------------------------------ */

Test(http_open, loopback_without_token_may_act)
{
    static const struct {
        const char *path;
        kg_msg_kind kind;
    } acts[] = {
        {"/api/update-loads", MSG_UPDATE_LOADS},
        {"/api/trigger-health-check", MSG_TRIGGER_HEALTH_CHECK},
        {"/api/trigger-rebalancing", MSG_TRIGGER_REBALANCE},
        {"/api/cancel-rebalancing", MSG_CANCEL_REBALANCE},
        {"/lb/update-loads", MSG_UPDATE_LOADS},
    };
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        int before = controller_calls();
        resp_t r = http("POST", acts[i].path, "", NULL);
        cr_assert_eq(r.status, 202, "%s: %ld %s", acts[i].path, r.status, r.body);
        json_object *o = json_body(&r);
        cr_assert_eq(json_object_get_boolean(jget(o, "ok")), 1);
        cr_assert_str_eq(json_object_get_string(jget(o, "detail")), "queued");
        cr_assert_eq(json_object_get_int(jget(o, "status")), 202);
        json_object_put(o);
        resp_free(&r);
        cr_assert_eq(controller_calls(), before + 1);
        cr_assert_eq(ctl_kind, acts[i].kind, "%s", acts[i].path);
        cr_assert_str_eq(ctl_actor, "127.0.0.1");
    }
}

Test(http_open, proxied_requests_need_a_token_even_from_loopback)
{
    const char *xff[] = {"X-Forwarded-For: 203.0.113.9", NULL};
    resp_t r = http("POST", "/api/trigger-rebalancing", "", xff);
    assert_error(&r, 403, "forbidden");
    resp_free(&r);
    const char *fwd[] = {"Forwarded: for=203.0.113.9", NULL};
    r = http("GET", "/api/debug-logs", NULL, fwd);
    assert_error(&r, 403, "forbidden");
    resp_free(&r);
    cr_assert_eq(controller_calls(), 0);
}

/* The only non-loopback address we can reach ourselves on is one of our own interfaces. */
static bool own_non_loopback_ipv4(char *out, size_t len)
{
    struct ifaddrs *ifa = NULL;
    bool found = false;
    if (getifaddrs(&ifa) != 0)
        return false;
    for (struct ifaddrs *p = ifa; p && !found; p = p->ifa_next) {
        if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET)
            continue;
        struct sockaddr_in *in = (struct sockaddr_in *)(void *)p->ifa_addr;
        if ((ntohl(in->sin_addr.s_addr) >> 24) == 127)
            continue;
        found = inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)len) != NULL;
    }
    freeifaddrs(ifa);
    return found;
}

Test(http_empty, remote_peer_without_token_is_refused)
{
    char ip[INET_ADDRSTRLEN];
    if (!own_non_loopback_ipv4(ip, sizeof ip))
        cr_skip_test("no non-loopback IPv4 interface on this machine");
    api_stop(api);
    config_free(&cfg);
    snapshot_publish(fixture_snapshot(10));
    start_server(NULL, "0.0.0.0:0");
    resp_t r = http_to(ip, "POST", "/api/trigger-rebalancing", "", 0, NULL);
    assert_error(&r, 403, "forbidden");
    resp_free(&r);
    r = http_to(ip, "GET", "/api/debug-logs", NULL, 0, NULL);
    assert_error(&r, 403, "forbidden");
    resp_free(&r);
    r = http_to(ip, "GET", "/api/node-status", NULL, 0, NULL);
    cr_assert_eq(r.status, 200, "reads stay open");
    resp_free(&r);
    cr_assert_eq(controller_calls(), 0);
}

Test(http_empty, listens_on_ipv6_loopback)
{
    api_stop(api);
    config_free(&cfg);
    snapshot_publish(fixture_snapshot(10));
    start_server(NULL, "[::1]:0");
    resp_t r = http_to("[::1]", "GET", "/api/node-status", NULL, 0, NULL);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    /* ::1 is loopback too: actions are accepted without a token */
    r = http_to("[::1]", "POST", "/api/update-loads", "", 0, NULL);
    cr_assert_eq(r.status, 202, "%s", r.body);
    resp_free(&r);
    cr_assert_str_eq(ctl_actor, "::1");
}

Test(http_empty, bad_listen_address_is_refused)
{
    api_stop(api);
    api = NULL;
    const char *bad[] = {"127.0.0.1", "127.0.0.1:99999", "[::1]8080", "127.0.0.1:http"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *saved = cfg.listen;
        cfg.listen = (char *)bad[i];
        char err[256] = "";
        kg_api *x = api_start(&cfg, err, sizeof err);
        cfg.listen = saved;
        cr_assert_null(x, "%s accepted", bad[i]);
        cr_assert_not_null(strstr(err, "KUMAGUARD_LISTEN"), "%s: %s", bad[i], err);
    }
}

Test(http_token, token_rules)
{
    resp_t r = http("POST", "/api/trigger-rebalancing", "", NULL);
    assert_error(&r, 401, "unauthorized");
    cr_assert_str_eq(r.www_auth, "Bearer realm=\"kumaguard\"");
    resp_free(&r);

    const char *wrong[] = {"Authorization: Bearer test-token-0123456788", NULL};
    r = http("POST", "/api/trigger-rebalancing", "", wrong);
    assert_error(&r, 403, "forbidden");
    resp_free(&r);
    const char *basic[] = {"Authorization: Basic dGVzdA==", NULL};
    r = http("POST", "/api/trigger-rebalancing", "", basic);
    assert_error(&r, 401, "unauthorized");
    resp_free(&r);
    cr_assert_eq(controller_calls(), 0, "loopback is not enough once a token is set");

    const char *right[] = {"Authorization: Bearer " TOKEN, NULL};
    r = http("POST", "/api/trigger-rebalancing", "", right);
    cr_assert_eq(r.status, 202, "%s", r.body);
    resp_free(&r);
    cr_assert_eq(controller_calls(), 1);
    /* a proxied request with the right token is fine */
    const char *right_xff[] = {"Authorization: Bearer " TOKEN, "X-Forwarded-For: 203.0.113.9",
                               NULL};
    r = http("POST", "/api/update-loads", "", right_xff);
    cr_assert_eq(r.status, 202, "%s", r.body);
    resp_free(&r);
}

/* A page on another site can make a browser send these (a form, a no-cors fetch, a DNS
 * rebinding page); without a token the loopback peer alone would have authorized them. */
Test(http_open, cross_site_browser_requests_cannot_act)
{
    const char *cross[][3] = {
        {"Origin: http://evil.example", "Content-Type: text/plain", NULL},
        {"Sec-Fetch-Site: cross-site", NULL, NULL},
        {"Sec-Fetch-Site: same-site", NULL, NULL},
        {"Origin: null", NULL, NULL},
        {"Host: rebind.attacker.example", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cross / sizeof cross[0]; i++) {
        resp_t r = http("POST", "/api/force-rebalance-all",
                        "{\"confirm\":\"force-rebalance-all\"}", cross[i]);
        assert_error(&r, 403, "cross_site");
        resp_free(&r);
    }
    resp_t r = http("GET", "/api/debug-logs", NULL, cross[4]);
    assert_error(&r, 403, "cross_site");
    resp_free(&r);
    cr_assert_eq(controller_calls(), 0);
    /* the dashboard itself (same origin) and curl (no browser headers) still work */
    const char *same[] = {"Sec-Fetch-Site: same-origin", "Host: localhost:8080",
                          "Origin: http://localhost:8080", NULL};
    r = http("POST", "/api/trigger-health-check", "", same);
    cr_assert_eq(r.status, 202, "%s", r.body);
    resp_free(&r);
    r = http("POST", "/api/trigger-health-check", "", NULL);
    cr_assert_eq(r.status, 202, "%s", r.body);
    resp_free(&r);
}

Test(http_token, debug_logs_need_the_token)
{
    log_info("marker-line-for-debug-logs");
    resp_t r = http("GET", "/api/debug-logs", NULL, NULL);
    assert_error(&r, 401, "unauthorized");
    resp_free(&r);
    const char *right[] = {"Authorization: Bearer " TOKEN, NULL};
    r = http("GET", "/api/debug-logs?lines=1000", NULL, right);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_object *o = json_body(&r);
    cr_assert_not_null(strstr(r.body, "marker-line-for-debug-logs"));
    cr_assert_null(strstr(r.body, TOKEN), "no secret in the logs");
    json_object_put(o);
    resp_free(&r);
    r = http("GET", "/api/debug-logs?lines=2", NULL, right);
    o = json_body(&r);
    cr_assert_leq(json_object_array_length(jget(o, "lines")), 2);
    json_object_put(o);
    resp_free(&r);
    r = http("GET", "/api/debug-logs?lines=0", NULL, right);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
    r = http("GET", "/api/debug-logs?lines=100000", NULL, right);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
}

Test(http_open, force_rebalance_needs_confirmation)
{
    resp_t r = http("POST", "/api/force-rebalance-all", "", NULL);
    assert_error(&r, 400, "confirmation_required");
    resp_free(&r);
    r = http("POST", "/api/force-rebalance-all", "{\"confirm\":\"yes\"}", NULL);
    assert_error(&r, 400, "confirmation_required");
    resp_free(&r);
    cr_assert_eq(controller_calls(), 0);
    r = http("POST", "/api/force-rebalance-all", "{\"confirm\":\"force-rebalance-all\"}", NULL);
    cr_assert_eq(r.status, 202, "%s", r.body);
    resp_free(&r);
    cr_assert_eq(ctl_kind, MSG_FORCE_REBALANCE_ALL);
}

Test(http_open, node_actions)
{
    static const struct {
        const char *verb;
        kg_msg_kind kind;
    } acts[] = {{"drain", MSG_NODE_DRAIN},
                {"maintenance", MSG_NODE_MAINTENANCE},
                {"enable", MSG_NODE_ENABLE}};
    for (size_t i = 0; i < 3; i++) {
        char path[96];
        snprintf(path, sizeof path, "/api/nodes/node03/%s", acts[i].verb);
        resp_t r = http("POST", path, "", NULL);
        cr_assert_eq(r.status, 202, "%s", r.body);
        json_object *o = json_body(&r);
        cr_assert_str_eq(json_object_get_string(jget(o, "node")), "node03");
        cr_assert_str_eq(json_object_get_string(jget(o, "action")), acts[i].verb);
        json_object_put(o);
        resp_free(&r);
        cr_assert_eq(ctl_kind, acts[i].kind);
        cr_assert_str_eq(ctl_node, "node03");
    }
    resp_t r = http("POST", "/api/nodes/ghost/drain", "", NULL);
    assert_error(&r, 404, "unknown_node");
    resp_free(&r);
    r = http("POST", "/api/nodes/bad%20id/drain", "", NULL);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
    cr_assert_eq(controller_calls(), 3);
}

Test(http_open, controller_refusals_are_passed_through)
{
    pthread_mutex_lock(&ctl_lock);
    ctl_status = 409;
    ctl_error = "not_leader";
    ctl_detail = "another instance holds the lease";
    pthread_mutex_unlock(&ctl_lock);
    resp_t r = http("POST", "/api/trigger-rebalancing", "", NULL);
    assert_error(&r, 409, "not_leader");
    json_object *o = json_body(&r);
    cr_assert_str_eq(json_object_get_string(jget(o, "detail")),
                     "another instance holds the lease");
    json_object_put(o);
    resp_free(&r);
}

Test(http_open, reads_are_served_while_an_action_waits)
{
    /* The controller is slow: the action's connection is parked, the pool keeps serving. */
    atomic_store(&ctl_stop, true);
    pthread_join(ctl_thread, NULL); /* nobody answers the mailbox for now */

    CURLM *multi = curl_multi_init();
    CURL *slow = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/update-loads", port);
    resp_t sr = {0};
    curl_easy_setopt(slow, CURLOPT_URL, url);
    curl_easy_setopt(slow, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(slow, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(slow, CURLOPT_WRITEDATA, &sr);
    curl_easy_setopt(slow, CURLOPT_NOPROXY, "*");
    curl_multi_add_handle(multi, slow);
    int running = 1;
    for (int i = 0; i < 20; i++) { /* send the request */
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 20; i++) {
        resp_t r = http("GET", "/api/node-status", NULL, NULL);
        cr_assert_eq(r.status, 200);
        resp_free(&r);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_lt(ms, 2000.0, "reads took %.0f ms while an action waited", ms);
    cr_assert_eq(sr.len, 0, "the action has not been answered yet");

    /* now answer it */
    atomic_store(&ctl_stop, false);
    cr_assert_eq(pthread_create(&ctl_thread, NULL, fake_controller, NULL), 0);
    for (int i = 0; i < 500 && running; i++) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    cr_assert_eq(running, 0);
    long code = 0;
    curl_easy_getinfo(slow, CURLINFO_RESPONSE_CODE, &code);
    cr_assert_eq(code, 202, "%s", sr.body ? sr.body : "");
    curl_multi_remove_handle(multi, slow);
    curl_easy_cleanup(slow);
    curl_multi_cleanup(multi);
    free(sr.body);
}

/* ------------------------------------------------------------------------------------------
 * Fixed node
 * ------------------------------------------------------------------------------------------ */

static const char *const json_ct[] = {"Content-Type: application/json", NULL};

Test(http_open, set_fixed_node_sets_a_safe_cookie)
{
    resp_t r = http("POST", "/lb/set-fixed-node", "{\"node\":\"node02\"}", json_ct);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(r.cookie,
                     "KUMA_FIXED_NODE=node02; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax");
    json_object *o = json_body(&r);
    cr_assert_str_eq(json_object_get_string(jget(o, "node")), "node02");
    json_object_put(o);
    resp_free(&r);
    cr_assert_eq(controller_calls(), 0, "no cluster action");
}

Test(http_open, set_fixed_node_refusals)
{
    resp_t r = http("POST", "/lb/set-fixed-node", "{\"node\":\"node02\"}", NULL);
    assert_error(&r, 415, "unsupported_media_type"); /* curl sends a form content type */
    cr_assert_str_eq(r.cookie, "");
    resp_free(&r);
    const char *form[] = {"Content-Type: text/plain", NULL};
    r = http("POST", "/lb/set-fixed-node", "{\"node\":\"node02\"}", form);
    assert_error(&r, 415, "unsupported_media_type");
    resp_free(&r);
    r = http("POST", "/lb/set-fixed-node", "{\"node\":", json_ct);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
    r = http("POST", "/lb/set-fixed-node", "{\"node\":\"x;Domain=evil\"}", json_ct);
    assert_error(&r, 400, "bad_request");
    cr_assert_str_eq(r.cookie, "");
    resp_free(&r);
    r = http("POST", "/lb/set-fixed-node", "{\"node\":\"ghost\"}", json_ct);
    assert_error(&r, 404, "unknown_node");
    resp_free(&r);
    r = http("POST", "/lb/set-fixed-node", "{\"node\":\"node09\"}", json_ct);
    assert_error(&r, 409, "node_not_routable");
    cr_assert_str_eq(r.cookie, "");
    resp_free(&r);
}

Test(http_open, cors_preflight_is_refused_without_cors_headers)
{
    const char *pre[] = {"Origin: https://evil.example", "Access-Control-Request-Method: POST",
                         "Access-Control-Request-Headers: content-type", NULL};
    resp_t r = http("OPTIONS", "/lb/set-fixed-node", NULL, pre);
    assert_error(&r, 405, "method_not_allowed");
    cr_assert_not(r.any_cors, "no Access-Control-* header at all");
    resp_free(&r);
    /* and no read endpoint grants CORS either */
    r = http("GET", "/api/system-status", NULL, pre);
    cr_assert_not(r.any_cors);
    resp_free(&r);
}

Test(http_open, clear_fixed_node_on_get_and_post)
{
    const char *methods[] = {"GET", "POST"};
    for (int i = 0; i < 2; i++) {
        resp_t r = http(methods[i], "/lb/clear-fixed-node", i ? "" : NULL, NULL);
        cr_assert_eq(r.status, 200, "%s", methods[i]);
        cr_assert_str_eq(r.cookie, "KUMA_FIXED_NODE=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
        resp_free(&r);
    }
}

Test(http_open, fixed_node_page_changes_nothing)
{
    resp_t r = http("GET", "/lb/fixed-node/node02", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.ctype, "text/html; charset=utf-8");
    cr_assert_str_eq(r.cookie, "", "GET sets no cookie");
    cr_assert_not_null(strstr(r.body, "data-node=\"node02\""));
    cr_assert_not_null(strstr(r.body, "'/lb/set-fixed-node'"));
    cr_assert_not_null(strstr(r.body, "'Content-Type':'application/json'"));
    resp_free(&r);
    r = http("GET", "/lb/fixed-node/node09", NULL, NULL);
    cr_assert_eq(r.status, 409, "offline node: page explains, button disabled");
    cr_assert_not_null(strstr(r.body, " disabled>"));
    resp_free(&r);
    r = http("GET", "/lb/fixed-node/%3Cscript%3E", NULL, NULL);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
}

Test(http_open, fixed_node_status_reads_the_cookie)
{
    const char *ck[] = {"Cookie: KUMA_FIXED_NODE=node03", NULL};
    resp_t r = http("GET", "/lb/fixed-node-status", NULL, ck);
    json_object *o = json_body(&r);
    cr_assert_eq(json_object_get_boolean(jget(o, "has_fixed_node")), 1);
    cr_assert_eq(json_object_get_boolean(jget(o, "is_valid")), 1);
    cr_assert_str_eq(json_object_get_string(jget(o, "current_node")), "node03");
    json_object_put(o);
    resp_free(&r);
}

/* ------------------------------------------------------------------------------------------
 * Dashboard files
 * ------------------------------------------------------------------------------------------ */

Test(http_open, dashboard_and_static_files)
{
    resp_t r = http("GET", "/", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.ctype, "text/html; charset=utf-8");
    cr_assert_not_null(strstr(r.body, "<title>kumaguard</title>"));
    cr_assert_str_eq(r.cache_control, "no-cache");
    resp_free(&r);

    r = http("GET", "/static/app.js", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.ctype, "text/javascript; charset=utf-8");
    cr_assert_str_eq(r.body, "console.log('kumaguard');\n");
    cr_assert_str_eq(r.cache_control, "public, max-age=300");
    cr_assert_neq(r.etag[0], '\0');
    char inm[128];
    snprintf(inm, sizeof inm, "If-None-Match: %s", r.etag);
    const char *h[] = {inm, NULL};
    resp_free(&r);
    r = http("GET", "/static/app.js", NULL, h);
    cr_assert_eq(r.status, 304);
    cr_assert_eq(r.len, 0);
    resp_free(&r);

    r = http("GET", "/static/css/site.css", NULL, NULL);
    cr_assert_str_eq(r.ctype, "text/css; charset=utf-8");
    resp_free(&r);
}

Test(http_open, static_files_cannot_escape_the_static_dir)
{
    const char *bad[] = {"/static/link.txt", "/static/../secret.txt", "/static/%2e%2e/secret.txt",
                         "/static/missing.js", "/static/.hidden", "/static/css"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp_t r = http("GET", bad[i], NULL, NULL);
        assert_error(&r, 404, "not_found");
        cr_assert_null(strstr(r.body, "outside the static dir"), "%s leaked", bad[i]);
        resp_free(&r);
    }
}

Test(http_open, missing_dashboard_is_404_json)
{
    char p[512];
    snprintf(p, sizeof p, "%s/web/templates/dashboard.html", tmpdir);
    cr_assert_eq(unlink(p), 0);
    resp_t r = http("GET", "/", NULL, NULL);
    assert_error(&r, 404, "not_found");
    resp_free(&r);
}

/* ------------------------------------------------------------------------------------------
 * Live events
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    char buf[16384];
    size_t len;
    const char *want;
} sse_capture;

static size_t on_sse(char *p, size_t sz, size_t n, void *ud)
{
    sse_capture *c = ud;
    size_t add = sz * n;
    if (c->len + add >= sizeof c->buf)
        return 0;
    memcpy(c->buf + c->len, p, add);
    c->len += add;
    c->buf[c->len] = '\0';
    return strstr(c->buf, c->want) ? 0 : add; /* stop once the wanted frame arrived */
}

static void *publish_later(void *arg)
{
    (void)arg;
    usleep(300 * 1000);
    kg_snapshot *s = fixture_snapshot(10);
    fixture_event(&s->recent_events[5], 6, EV_FAILOVER, "node04", "node04", "several", 17);
    s->n_recent_events = 6;
    snapshot_publish(s);
    return NULL;
}

static void sse_get(sse_capture *cap, const char *const *headers, bool publish)
{
    pthread_t t;
    if (publish)
        cr_assert_eq(pthread_create(&t, NULL, publish_later, NULL), 0);
    CURL *h = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events", port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_sse);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, cap);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    struct curl_slist *hl = NULL;
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    CURLcode rc = curl_easy_perform(h);
    cr_assert_eq(rc, CURLE_WRITE_ERROR, "stream ended without '%s' (%s): %s", cap->want,
                 curl_easy_strerror(rc), cap->buf);
    char *ct = NULL;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    cr_assert_str_eq(ct, "text/event-stream; charset=utf-8");
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (publish)
        pthread_join(t, NULL);
}

Test(http_open, sse_delivers_a_newly_published_event)
{
    sse_capture cap = {.want = "id: 6\ndata: {"};
    sse_get(&cap, NULL, true);
    char *frame = strstr(cap.buf, "id: 6\ndata: ");
    cr_assert_not_null(frame);
    cr_assert_null(strstr(cap.buf, "id: 5\n"), "without Last-Event-ID, old events are not sent");
    cr_assert_not_null(strstr(cap.buf, "retry: 3000\n"));
    cr_assert_not_null(strstr(cap.buf, "event: snapshot\n"));
    json_object *o = json_tokener_parse(frame + strlen("id: 6\ndata: "));
    cr_assert_not_null(o);
    cr_assert_str_eq(json_object_get_string(jget(o, "kind")), "failover");
    cr_assert_str_eq(json_object_get_string(jget(o, "node")), "node04");
    cr_assert_eq(json_object_get_int(jget(o, "count")), 17);
    json_object_put(o);
}

Test(http_open, sse_replays_after_last_event_id)
{
    const char *h[] = {"Last-Event-ID: 3", NULL};
    sse_capture cap = {.want = "id: 5\n"};
    sse_get(&cap, h, false);
    cr_assert_not_null(strstr(cap.buf, "id: 4\n"));
    cr_assert_null(strstr(cap.buf, "id: 3\n"));
}

Test(http_open, server_stops_cleanly_with_open_streams)
{
    /* An idle stream is parked (suspended); api_stop must still end it and return. */
    CURLM *multi = curl_multi_init();
    CURL *h = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events", port);
    sse_capture cap = {.want = "never"};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_sse);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &cap);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_multi_add_handle(multi, h);
    int running = 1;
    for (int i = 0; i < 50 && !strstr(cap.buf, "retry:"); i++) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    cr_assert_not_null(strstr(cap.buf, "retry: 3000"));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    api_stop(api);
    api = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_lt(ms, 3000.0, "api_stop took %.0f ms", ms);
    for (int i = 0; i < 100 && running; i++) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    cr_assert_eq(running, 0, "the client saw the stream end");
    curl_multi_remove_handle(multi, h);
    curl_easy_cleanup(h);
    curl_multi_cleanup(multi);
}

/* Regression: set-fixed-node accepted a draining node.  A draining node is still routed (its
 * sessions finish) but gets no new users: the cookie may only name a node that is online. */
Test(http_open, set_fixed_node_refuses_a_draining_node)
{
    kg_snapshot *s = fixture_snapshot(10);
    s->nodes[1].state = NODE_DRAINING; /* node02 */
    snapshot_publish(s);
    resp_t r = http("POST", "/lb/set-fixed-node", "{\"node\":\"node02\"}", json_ct);
    assert_error(&r, 409, "node_not_routable");
    cr_assert_str_eq(r.cookie, "", "no cookie for a draining node");
    resp_free(&r);
}
