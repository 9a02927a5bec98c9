/* test_probe.c — classification of probe answers (probe_classify) and the mailbox/snapshot
 * mechanisms the prober and controller share. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <string.h>

#include "mailbox.h"
#include "probe.h"
#include "snapshot.h"

static const char healthy[] =
    "{\"ok\":true,\"status\":\"healthy\",\"checks\":{\"database\":{\"status\":\"healthy\"}}}";

Test(probe, healthy_json_200_is_ok)
{
    probe_result r = probe_classify(CURLE_OK, 200, healthy, strlen(healthy), 200, 3.5);
    cr_assert_eq(r.outcome, PROBE_OK);
    cr_assert_float_eq(r.latency_ms, 3.5, 1e-9);
}

Test(probe, status_503_fails_with_reason)
{
    const char body[] = "{\"ok\":false,\"status\":\"unhealthy\"}";
    probe_result r = probe_classify(CURLE_OK, 503, body, strlen(body), 200, 1);
    cr_assert_eq(r.outcome, PROBE_BAD_STATUS);
    cr_assert_str_eq(r.reason, "HTTP 503");
}

Test(probe, unhealthy_body_with_200_fails)
{
    const char body[] = "{\"ok\":false,\"status\":\"degraded\"}";
    probe_result r = probe_classify(CURLE_OK, 200, body, strlen(body), 200, 1);
    cr_assert_eq(r.outcome, PROBE_BAD_BODY);
    cr_assert(strstr(r.reason, "degraded"));
}

Test(probe, non_json_or_statusless_body_is_judged_by_status_code)
{
    const char text[] = "OK";
    cr_assert_eq(probe_classify(CURLE_OK, 200, text, 2, 200, 1).outcome, PROBE_OK);
    const char other[] = "{\"ok\":true}";
    cr_assert_eq(probe_classify(CURLE_OK, 200, other, strlen(other), 200, 1).outcome, PROBE_OK);
    const char num[] = "{\"status\":5}";
    cr_assert_eq(probe_classify(CURLE_OK, 200, num, strlen(num), 200, 1).outcome, PROBE_OK);
    cr_assert_eq(probe_classify(CURLE_OK, 200, NULL, 0, 200, 1).outcome, PROBE_OK);
}

Test(probe, expected_status_is_configurable)
{
    cr_assert_eq(probe_classify(CURLE_OK, 204, NULL, 0, 204, 1).outcome, PROBE_OK);
    cr_assert_eq(probe_classify(CURLE_OK, 200, NULL, 0, 204, 1).outcome, PROBE_BAD_STATUS);
}

Test(probe, transport_errors_are_named)
{
    probe_result r = probe_classify(CURLE_OPERATION_TIMEDOUT, 0, NULL, 0, 200, 500);
    cr_assert_eq(r.outcome, PROBE_TIMEOUT);
    cr_assert(strstr(r.reason, "timeout"));
    r = probe_classify(CURLE_COULDNT_CONNECT, 0, NULL, 0, 200, 1);
    cr_assert_eq(r.outcome, PROBE_CONNECT_FAILED);
    cr_assert_str_eq(r.reason, "connection refused");
    r = probe_classify(CURLE_RECV_ERROR, 0, NULL, 0, 200, 1);
    cr_assert_eq(r.outcome, PROBE_ERROR);
    cr_assert(strlen(r.reason) > 0);
}

static void *answer_one(void *arg)
{
    (void)arg;
    kg_msg *m = mailbox_wait(5000);
    if (m) {
        reply_finish(m->reply, 202, "", m->node);
        mailbox_free(m);
    }
    return NULL;
}

Test(mailbox, call_gets_the_controllers_reply)
{
    pthread_t t;
    pthread_create(&t, NULL, answer_one, NULL);
    int status = 0;
    char error[64], detail[64];
    mailbox_call(MSG_NODE_DRAIN, "node7", "127.0.0.1", 5000, &status, error, sizeof error,
                 detail, sizeof detail);
    pthread_join(t, NULL);
    cr_assert_eq(status, 202);
    cr_assert_str_eq(detail, "node7");
}

Test(mailbox, call_times_out_when_nobody_answers)
{
    int status = 0;
    char error[64], detail[128];
    mailbox_call(MSG_UPDATE_LOADS, NULL, "x", 50, &status, error, sizeof error, detail,
                 sizeof detail);
    cr_assert_eq(status, 504);
    /* the queued message still holds its reply: draining must free it without a crash */
    kg_msg *m = mailbox_wait(10);
    cr_assert_not_null(m);
    reply_finish(m->reply, 200, "", "late");
    mailbox_free(m);
}

Test(snapshot, readers_keep_their_copy_across_publishes)
{
    kg_snapshot *a = snapshot_new(1);
    snprintf(a->nodes[0].id, sizeof a->nodes[0].id, "node1");
    snapshot_publish(a);
    kg_snapshot *held = snapshot_acquire();
    cr_assert_eq(held, a);
    kg_snapshot *b = snapshot_new(2);
    snprintf(b->nodes[0].id, sizeof b->nodes[0].id, "a");
    snprintf(b->nodes[1].id, sizeof b->nodes[1].id, "b");
    snapshot_publish(b);
    cr_assert_str_eq(held->nodes[0].id, "node1", "old snapshot still readable");
    cr_assert_gt(b->seq, held->seq);
    kg_snapshot *now = snapshot_wait_newer(held->seq, 100);
    cr_assert_eq(now, b);
    cr_assert_not_null(snapshot_find_node(now, "b"));
    cr_assert_null(snapshot_find_node(now, "c"));
    snapshot_release(now);
    snapshot_release(held);
    cr_assert_null(snapshot_wait_newer(b->seq, 20), "no newer snapshot: timeout");
    snapshot_clear();
}

/* ---- the prober thread against real sockets ------------------------------------------------
 *
 * A tiny HTTP server (one thread, poll over its listening sockets, one answer per connection)
 * stands in for the nodes; a port nobody listens on is a node that refuses.  The prober posts
 * one MSG_PROBE_RESULT per probe into the mailbox, which the test reads as the controller
 * would.  These pin down that the prober follows the snapshot — nodes added, removed, moved to
 * another host, put in maintenance, and a new list after snapshot_clear — since it keeps its
 * own sorted target list and only re-reads the snapshot when a newer one is published. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "netpolicy_curl.h"

static struct {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
} srv;

static void *serve(void *arg)
{
    (void)arg;
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 20\r\nConnection: close\r\n\r\n"
                             "{\"status\":\"healthy\"}";
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {.fd = srv.fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(srv.fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[2048];
        size_t got = 0;
        struct pollfd q = {.fd = c, .events = POLLIN};
        while (got < sizeof buf - 1 && poll(&q, 1, 500) > 0) {
            ssize_t r = read(c, buf + got, sizeof buf - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n"))
                break;
        }
        if (write(c, ok, sizeof ok - 1) < 0) { /* the prober gave up: nothing to do */
        }
        close(c);
    }
    return NULL;
}

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port that refuses: bound (so nobody else gets it meanwhile) but never listening. */
static int refusing_port(int *fd)
{
    int port;
    *fd = listen_loopback(&port);
    return port;
}

static kg_config pcfg;

static void prober_setup(void)
{
    srv.fd = listen_loopback(&srv.port);
    cr_assert_eq(listen(srv.fd, 512), 0);
    atomic_store(&srv.stop, false);
    pthread_create(&srv.thread, NULL, serve, NULL);
    char *args[] = {"test_probe", "--health-interval", "150ms", "--health-fast-interval",
                    "100ms", "--health-timeout", "500ms", NULL};
    char *noenv[] = {NULL};
    char err[256];
    cr_assert_eq(config_load(&pcfg, 7, args, noenv, stdout, err, sizeof err), 0, "%s", err);
    netpolicy_curl_install(&pcfg.node_policy);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cr_assert_eq(prober_start(&pcfg, err, sizeof err), 0, "%s", err);
}

static void prober_teardown(void)
{
    prober_stop();
    snapshot_clear();
    mailbox_drain();
    atomic_store(&srv.stop, true);
    pthread_join(srv.thread, NULL);
    close(srv.fd);
    config_free(&pcfg);
    curl_global_cleanup();
}

typedef struct {
    const char *id;
    int port;
    node_state state;
} pnode;

/* Publishes nodes (given sorted by id, as the controller keeps them). */
static void publish(const pnode *ns, int n)
{
    kg_snapshot *s = snapshot_new(n);
    cr_assert_not_null(s);
    for (int i = 0; i < n; i++) {
        snprintf(s->nodes[i].id, sizeof s->nodes[i].id, "%s", ns[i].id);
        snprintf(s->nodes[i].host, sizeof s->nodes[i].host, "127.0.0.1:%d", ns[i].port);
        s->nodes[i].host_valid = true;
        s->nodes[i].state = ns[i].state;
    }
    snapshot_publish(s);
}

enum { MAXN = 400 };

typedef struct {
    char id[KG_NODE_ID_MAX + 1];
    int ok, failed;
} tally;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads probe results for ms milliseconds into t[] (one entry per node id seen). */
static int collect(int ms, tally *t, int max)
{
    int n = 0;
    int64_t end = mono_ms() + ms;
    for (int64_t left; (left = end - mono_ms()) > 0;) {
        kg_msg *m = mailbox_wait((int)left);
        if (!m)
            continue;
        if (m->kind == MSG_PROBE_RESULT) {
            int i = 0;
            while (i < n && strcmp(t[i].id, m->node) != 0)
                i++;
            if (i == n && n < max) {
                memset(&t[n], 0, sizeof t[n]);
                snprintf(t[n].id, sizeof t[n].id, "%s", m->node);
                n++;
            }
            if (i < n) {
                if (m->probe.outcome == PROBE_OK)
                    t[i].ok++;
                else
                    t[i].failed++;
            }
        }
        mailbox_free(m);
    }
    return n;
}

static const tally *find(const tally *t, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0)
            return &t[i];
    return NULL;
}

TestSuite(prober, .init = prober_setup, .fini = prober_teardown, .timeout = 30);

Test(prober, follows_nodes_added_removed_moved_and_in_maintenance)
{
    int rfd, refused = refusing_port(&rfd);
    tally t[8];
    pnode first[] = {{"a", srv.port, NODE_ONLINE}, {"b", refused, NODE_ONLINE},
                     {"c", srv.port, NODE_ONLINE}};
    publish(first, 3);
    int n = collect(700, t, 8);
    cr_assert_gt(find(t, n, "a") ? find(t, n, "a")->ok : 0, 0, "a answers");
    cr_assert_gt(find(t, n, "b") ? find(t, n, "b")->failed : 0, 0, "b refuses");
    cr_assert_eq(find(t, n, "b")->ok, 0);
    cr_assert_gt(find(t, n, "c") ? find(t, n, "c")->ok : 0, 0, "c answers");

    /* a moves to the refusing port, b leaves, c goes into maintenance, d and 0 arrive (one
     * sorting before every old id, one after) — in a list published after snapshot_clear (as
     * in a test harness or a restarted controller): the prober, which re-reads the list only
     * when the snapshot's seq moved, must see it as newer (the first list was seq 1, and seq
     * used to start again at 1 after a clear) */
    snapshot_clear();
    pnode second[] = {{"0", srv.port, NODE_ONLINE}, {"a", refused, NODE_ONLINE},
                      {"c", srv.port, NODE_MAINTENANCE}, {"d", srv.port, NODE_ONLINE}};
    publish(second, 4);
    collect(300, t, 8); /* probes started before the change may still report */
    n = collect(700, t, 8);
    cr_assert_null(find(t, n, "b"), "a node that left is not probed");
    cr_assert_null(find(t, n, "c"), "a node in maintenance is not probed");
    cr_assert_not_null(find(t, n, "a"));
    cr_assert_gt(find(t, n, "a")->failed, 0, "a is probed at its new host");
    cr_assert_eq(find(t, n, "a")->ok, 0, "and no longer at the old one");
    cr_assert(find(t, n, "0") && find(t, n, "0")->ok > 0, "a new node sorting first is probed");
    cr_assert(find(t, n, "d") && find(t, n, "d")->ok > 0, "a new node sorting last is probed");

    /* and an ordinary newer list: only e is left */
    pnode third[] = {{"e", srv.port, NODE_ONLINE}};
    publish(third, 1);
    collect(300, t, 8);
    n = collect(700, t, 8);
    cr_assert_eq(n, 1, "only e is probed now, got %d ids", n);
    cr_assert_str_eq(t[0].id, "e");
    close(rfd);
}

Test(prober, every_node_of_many_is_probed_each_interval)
{
    enum { N = 300 };
    static pnode ns[N];
    static char ids[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "n%03d", i);
        ns[i] = (pnode){ids[i], srv.port, NODE_ONLINE};
    }
    publish(ns, N);
    collect(400, (tally[MAXN]){0}, MAXN); /* the first probe of each: due at once */
    static tally t[MAXN];
    int n = collect(1500, t, MAXN);
    /* every 150-165 ms: 1.5 s is 9-10 intervals; a loaded machine may delay some */
    cr_assert_eq(n, N, "every node probed (%d of %d)", n, N);
    for (int i = 0; i < n; i++) {
        cr_expect_geq(t[i].ok, 4, "%s: %d probes in 1.5 s", t[i].id, t[i].ok);
        cr_expect_leq(t[i].ok + t[i].failed, 11, "%s probed too often: %d", t[i].id,
                      t[i].ok + t[i].failed);
    }
}
