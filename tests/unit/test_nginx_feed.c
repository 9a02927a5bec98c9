/* test_nginx_feed.c — the nginx feed against a real nginx (Debian's /usr/sbin/nginx) started
 * with its own prefix in a mkdtemp directory and its own loopback ports.  The same nginx also
 * serves three tiny backends ("b1", "b2", "b3") that the rendered upstreams point to, so a
 * request through a front port says which node the rendered include routed it to.  Two fronts:
 * `front` proxies every request with `proxy_pass http://$kuma_upstream` (site configs written
 * before the fast path), `front2` as docker/nginx-site.conf does (no cookie: a fixed proxy_pass
 * to kuma_cluster; a cookie: the variable, in a named location).  The nginx.conf sets no hash
 * sizes: a stock configuration.
 *
 * Each test starts and stops its own nginx (about 50 ms).  Waits are bounded (3 s). */
#include <criterion/criterion.h>

#include <dirent.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "mailbox.h"
#include "nginx_feed.h"
#include "nginx_worker.h"

#define NGINX_BIN "/usr/sbin/nginx"

/* ---- fixture ---------------------------------------------------------------------------- */

static struct {
    char dir[128];
    char include[256], state[256], tmpl[256], conf[256], failmark[256], reloadlog[256];
    char test_cmd[1024], reload_cmd[1024];
    int front, front2, b[3];
    pid_t nginx;
    kg_config cfg;
    kg_nginx_feed *feed;
} fx;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strdup(buf);
}

/* GET / through a front port; returns the body ("b1"...) or "" on failure. */
static const char *get_body_at(int port, const char *cookie)
{
    static char resp[4096];
    resp[0] = 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {2, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return "";
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET / HTTP/1.0\r\nHost: t\r\n%s%s%s\r\n",
                     cookie ? "Cookie: KUMA_FIXED_NODE=" : "", cookie ? cookie : "",
                     cookie ? "\r\n" : "");
    if (write(s, req, (size_t)n) != n) {
        close(s);
        return "";
    }
    size_t len = 0;
    ssize_t r;
    while (len < sizeof resp - 1 && (r = read(s, resp + len, sizeof resp - 1 - len)) > 0)
        len += (size_t)r;
    resp[len] = 0;
    close(s);
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0)
        return "";
    char *body = strstr(resp, "\r\n\r\n");
    return body ? body + 4 : "";
}

static const char *get_body(const char *cookie)
{
    return get_body_at(fx.front, cookie);
}

/* Polls until a front answers `want`.  A reload takes effect in tens of ms; the bound is
 * 10 s because a sanitizer build on a loaded 2-core machine once needed more than 3 s. */
static bool serves_at(int port, const char *want, const char *cookie)
{
    for (int i = 0; i < 500; i++) {
        if (strcmp(get_body_at(port, cookie), want) == 0)
            return true;
        sleep_ms(20);
    }
    return false;
}

static bool serves(const char *want, const char *cookie)
{
    return serves_at(fx.front, want, cookie);
}

static int reloads_run(void)
{
    char *log = read_text(fx.reloadlog);
    int n = 0;
    for (char *p = log; p && *p; p++)
        n += *p == '\n';
    free(log);
    return n;
}

static void write_nginx_conf(void)
{
    char conf[6144];
    snprintf(conf, sizeof conf,
             "worker_processes 1;\n"
             "pid %1$s/nginx.pid;\n"
             "error_log %1$s/error.log warn;\n"
             "events { worker_connections 128; }\n"
             "http {\n"
             "  access_log off;\n"
             "  client_body_temp_path %1$s/tmp/body;\n"
             "  proxy_temp_path %1$s/tmp/proxy;\n"
             "  fastcgi_temp_path %1$s/tmp/fastcgi;\n"
             "  uwsgi_temp_path %1$s/tmp/uwsgi;\n"
             "  scgi_temp_path %1$s/tmp/scgi;\n"
             "  include %2$s;\n"
             "  server { listen 127.0.0.1:%3$d; location / { return 200 \"b1\"; } }\n"
             "  server { listen 127.0.0.1:%4$d; location / { return 200 \"b2\"; } }\n"
             "  server { listen 127.0.0.1:%5$d; location / { return 200 \"b3\"; } }\n"
             "  server { listen 127.0.0.1:%6$d;\n"
             "    location / { proxy_pass http://$kuma_upstream;\n"
             "                 proxy_next_upstream error timeout http_502 http_503; } }\n"
             "  server { listen 127.0.0.1:%7$d;\n"
             "    location / { error_page 418 = @pinned;\n"
             "                 if ($cookie_KUMA_FIXED_NODE != \"\") { return 418; }\n"
             "                 proxy_pass http://kuma_cluster; }\n"
             "    location @pinned { proxy_pass http://$kuma_upstream; } }\n"
             "}\n",
             fx.dir, fx.include, fx.b[0], fx.b[1], fx.b[2], fx.front, fx.front2);
    write_text(fx.conf, conf);
}

static void start_nginx(void)
{
    /* bootstrap include: the feed replaces it on its first update */
    char boot[256];
    snprintf(boot, sizeof boot,
             "upstream kuma_cluster { server 127.0.0.1:%d; }\n"
             "map $cookie_KUMA_FIXED_NODE $kuma_upstream { default kuma_cluster; }\n",
             fx.b[2]);
    write_text(fx.include, boot);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a crashed test */
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(NGINX_BIN, NGINX_BIN, "-p", fx.dir, "-c", fx.conf, "-g", "daemon off;",
              (char *)NULL);
        _exit(127);
    }
    fx.nginx = pid;
    cr_assert(serves("b3", NULL), "test nginx did not start (see %s/error.log)", fx.dir);
}

static void setup(void)
{
    memset(&fx, 0, sizeof fx);
    snprintf(fx.dir, sizeof fx.dir, "/tmp/kg-nginx-feed-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s/tmp", fx.dir);
    mkdir(tmp, 0755);
    snprintf(fx.include, sizeof fx.include, "%s/kuma-upstream.conf", fx.dir);
    snprintf(fx.state, sizeof fx.state, "%s/state", fx.dir);
    snprintf(fx.conf, sizeof fx.conf, "%s/nginx.conf", fx.dir);
    snprintf(fx.failmark, sizeof fx.failmark, "%s/fail-validation", fx.dir);
    snprintf(fx.reloadlog, sizeof fx.reloadlog, "%s/reloads.log", fx.dir);
    snprintf(fx.tmpl, sizeof fx.tmpl, "%s/web/templates/nginx-upstream.conf.tmpl",
             getenv("KG_SOURCE_DIR") ? getenv("KG_SOURCE_DIR") : ".");
    /* Validation fails on demand (the marker file) with a message, as `nginx -t` would. */
    snprintf(fx.test_cmd, sizeof fx.test_cmd,
             "if [ -e %s ]; then echo 'nginx: [emerg] simulated validation failure' >&2; "
             "exit 1; fi; exec " NGINX_BIN " -t -q -p %s -c %s",
             fx.failmark, fx.dir, fx.conf);
    snprintf(fx.reload_cmd, sizeof fx.reload_cmd,
             "echo reload >> %s && exec " NGINX_BIN " -s reload -p %s -c %s", fx.reloadlog,
             fx.dir, fx.conf);
    fx.front = free_port();
    fx.front2 = free_port();
    for (int i = 0; i < 3; i++)
        fx.b[i] = free_port();
    write_nginx_conf();
    start_nginx();

    fx.cfg.nginx_include = fx.include;
    fx.cfg.nginx_template = fx.tmpl;
    fx.cfg.nginx_test_cmd = fx.test_cmd;
    fx.cfg.nginx_reload_cmd = fx.reload_cmd;
    fx.cfg.state_dir = fx.state;
    fx.cfg.nginx_reload_min_gap_ms = 0;
}

static void teardown(void)
{
    nginx_feed_free(fx.feed);
    if (fx.nginx > 0) {
        kill(fx.nginx, SIGTERM);
        waitpid(fx.nginx, NULL, 0);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx.dir);
    if (strncmp(fx.dir, "/tmp/kg-nginx-feed-", 19) == 0)
        (void)system(cmd);
}

static kg_nginx_feed *new_feed(void)
{
    char err[256] = "";
    kg_nginx_feed *f = nginx_feed_new(&fx.cfg, err, sizeof err);
    cr_assert_not_null(f, "nginx_feed_new: %s", err);
    return f;
}

/* Node list: ids n1..n3 on the backends b1..b3; states[i] for each. */
static void nodes3(kg_node_view ns[3], node_state s1, node_state s2, node_state s3)
{
    node_state st[3] = {s1, s2, s3};
    memset(ns, 0, 3 * sizeof *ns);
    for (int i = 0; i < 3; i++) {
        snprintf(ns[i].id, sizeof ns[i].id, "n%d", i + 1);
        snprintf(ns[i].host, sizeof ns[i].host, "127.0.0.1:%d", fx.b[i]);
        ns[i].host_valid = true;
        ns[i].state = st[i];
    }
}

/* Worker processes of the test nginx (children of its master), from /proc. */
static int workers(pid_t *out, int max)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        char state = 0;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == fx.nginx &&
            state != 'Z')
            out[n++] = atoi(e->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

/* Runs one feed update.  After a reload, waits (bounded) until nginx's old workers are gone:
 * until then an old worker may still take a new connection with the previous upstream. */
static nginx_feed_outcome update(const kg_node_view *ns, int n, bool freeze, int64_t at)
{
    pid_t old[16];
    int nold = workers(old, 16);
    nginx_feed_outcome o;
    nginx_feed_update(fx.feed, ns, n, freeze, at, &o);
    for (int tries = 0; tries < 150; tries++) {
        bool alive = false;
        for (int i = 0; i < nold; i++) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/stat", (int)old[i]);
            FILE *f = fopen(path, "r");
            if (f) {
                char buf[256] = "";
                size_t len = fread(buf, 1, sizeof buf - 1, f);
                fclose(f);
                buf[len] = 0;
                char *rp = strrchr(buf, ')');
                alive |= rp && rp[2] != 'Z';
            }
        }
        if (!alive || !o.attempted || !o.ok)
            break;
        sleep_ms(20);
    }
    return o;
}

static const node_state ON = NODE_ONLINE, OFF = NODE_OFFLINE;

TestSuite(nginx_feed, .init = setup, .fini = teardown, .timeout = 30);

/* ---- behaviour ------------------------------------------------------------------------------ */

Test(nginx_feed, write_validate_reload_serves_the_new_upstream)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    nginx_feed_outcome o = update(ns, 3, false, now_ms());
    cr_assert(o.attempted && o.ok, "first update: %s", o.error);
    cr_expect(serves("b1", NULL), "nginx routes to the only online node");

    nodes3(ns, OFF, ON, OFF);
    o = update(ns, 3, false, now_ms());
    cr_assert(o.attempted && o.ok, "%s", o.error);
    cr_expect(serves("b2", NULL));
    for (int i = 0; i < 20; i++)
        cr_expect_str_eq(get_body(NULL), "b2", "the offline node gets nothing after reload");

    kg_nginx_view st;
    nginx_feed_status(fx.feed, &st);
    cr_expect(st.enabled);
    cr_expect_eq(st.reloads_ok, 2);
    cr_expect_eq(st.reloads_failed, 0);
    cr_expect(st.last_ok);
    cr_expect_eq(st.routed_nodes, 1);
    cr_expect_not(st.fallback_all);
    cr_expect_str_eq(st.include_path, fx.include);
    cr_expect_eq(reloads_run(), 2);

    /* the last good copy in the state dir is what nginx runs */
    char lg[300];
    snprintf(lg, sizeof lg, "%s/nginx-last-good.conf", fx.state);
    char *a = read_text(fx.include), *b = read_text(lg);
    cr_assert(a && b);
    cr_expect_str_eq(a, b);
    free(a);
    free(b);
}

Test(nginx_feed, cookie_pins_and_falls_back)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, ON, OFF);
    nginx_feed_outcome o = update(ns, 3, false, now_ms());
    cr_assert(o.ok, "%s", o.error);
    cr_expect(serves("b1", "n1"));
    cr_expect(serves("b2", "n2"));
    /* n3 is offline: a pin to it goes to the cluster (b1 or b2), never to b3 */
    for (int i = 0; i < 10; i++) {
        const char *b = get_body("n3");
        cr_expect(strcmp(b, "b1") == 0 || strcmp(b, "b2") == 0, "got '%s'", b);
    }
    nodes3(ns, OFF, ON, ON);
    o = update(ns, 3, false, now_ms());
    cr_assert(o.ok, "%s", o.error);
    cr_expect(serves("b3", "n3"), "the pin works once its node is online");
    for (int i = 0; i < 10; i++) {
        const char *b = get_body("n1");
        cr_expect(strcmp(b, "b2") == 0 || strcmp(b, "b3") == 0, "n1 went offline, got '%s'", b);
    }
}

/* A node named like one of map's keywords passes `nginx -t` and can be pinned. */
Test(nginx_feed, nodes_named_like_nginx_keywords_validate_and_pin)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, ON, ON);
    snprintf(ns[0].id, sizeof ns[0].id, "default");
    snprintf(ns[1].id, sizeof ns[1].id, "include");
    snprintf(ns[2].id, sizeof ns[2].id, "node3");
    nginx_feed_outcome o = update(ns, 3, false, now_ms());
    cr_assert(o.ok, "%s", o.error);
    cr_expect(serves("b1", "default"));
    cr_expect(serves("b2", "include"));
    cr_expect(serves("b3", "node3"));
}

/* Issue 13 #2: node ids of 47 to 50 characters (the column allows 50) made the rendered map
 * fail `nginx -t` on a stock nginx.conf (map_hash_bucket_size 64): routing froze.  Now any id
 * the schema allows renders an include that validates, also with hundreds of long ids, and a
 * cookie naming a long id pins to it (ignoring case, as for short ids), through both site
 * forms; an id named "0" pins through the fast path too (a bare `if ($cookie)` would not). */
Test(nginx_feed, node_ids_of_47_to_50_characters_validate_and_pin)
{
    fx.feed = new_feed();
    enum { EXTRA = 300 };
    kg_node_view *ns = calloc(3 + EXTRA + 1, sizeof *ns);
    cr_assert_not_null(ns);
    nodes3(ns, ON, ON, ON);
    snprintf(ns[0].id, sizeof ns[0].id, "%s", "kuma-node-with-a-long-name.eu-west-1a.internals");
    snprintf(ns[1].id, sizeof ns[1].id, "%s", "Kuma_Node.With.Dots-And.Case.48.characters.longs");
    snprintf(ns[2].id, sizeof ns[2].id, "%s", "kuma-node-0123456789-0123456789-0123456789-0000050");
    cr_assert_eq(strlen(ns[0].id), 47);
    cr_assert_eq(strlen(ns[1].id), 48);
    cr_assert_eq(strlen(ns[2].id), 50);
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    uint32_t r = 12345;
    for (int i = 0; i < EXTRA; i++) { /* ids of 40 to 50 characters on the third backend */
        kg_node_view *v = &ns[3 + i];
        int len = 40 + i % 11;
        int p = snprintf(v->id, sizeof v->id, "x%03d-", i);
        for (; p < len; p++) {
            r = r * 1103515245u + 12345u;
            v->id[p] = alphabet[(r >> 16) % (sizeof alphabet - 1)];
        }
        v->id[len] = 0;
        snprintf(v->host, sizeof v->host, "127.0.0.1:%d", fx.b[2]);
        v->host_valid = true;
        v->state = ON;
    }
    snprintf(ns[3 + EXTRA].id, sizeof ns[3 + EXTRA].id, "0");
    snprintf(ns[3 + EXTRA].host, sizeof ns[3 + EXTRA].host, "127.0.0.1:%d", fx.b[1]);
    ns[3 + EXTRA].host_valid = true;
    ns[3 + EXTRA].state = ON;
    nginx_feed_outcome o = update(ns, 3 + EXTRA + 1, false, now_ms());
    cr_assert(o.attempted && o.ok, "nginx -t refused ids of up to 50 characters: %s", o.error);
    int fronts[2] = {fx.front, fx.front2};
    for (int f = 0; f < 2; f++) {
        cr_expect(serves_at(fronts[f], "b1", "kuma-node-with-a-long-name.eu-west-1a.internals"),
                  "front %d: 47-character id", f);
        cr_expect(serves_at(fronts[f], "b2", "kuma_node.with.dots-and.case.48.characters.longs"),
                  "front %d: 48-character id, other case", f);
        cr_expect(serves_at(fronts[f], "b3", "kuma-node-0123456789-0123456789-0123456789-0000050"),
                  "front %d: 50-character id", f);
        cr_expect(serves_at(fronts[f], "b2", "0"), "front %d: a node named 0", f);
    }
    free(ns);
}

Test(nginx_feed, unchanged_bytes_no_write_no_reload)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, ON, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    struct stat st1, st2;
    cr_assert_eq(stat(fx.include, &st1), 0);

    nodes3(ns, ON, ON, OFF);
    ns[0].state = NODE_SUSPECT; /* still routed: same bytes */
    ns[1].consecutive_failures = 7;
    nginx_feed_outcome o = update(ns, 3, false, t + 60000);
    cr_expect_not(o.attempted, "nothing to do when the bytes are the same");
    cr_expect(o.ok);
    cr_assert_eq(stat(fx.include, &st2), 0);
    cr_expect_eq(st1.st_ino, st2.st_ino, "the file was rewritten (new inode)");
    cr_expect_eq(st1.st_mtim.tv_nsec, st2.st_mtim.tv_nsec);
    cr_expect_eq(reloads_run(), 1);
    kg_nginx_view v;
    nginx_feed_status(fx.feed, &v);
    cr_expect_eq(v.writes_skipped_unchanged, 1);
    cr_expect_eq(v.renders, 2);
    cr_expect_eq(v.reloads_ok, 1);
    cr_expect_eq(nginx_feed_due_ms(fx.feed), 0);
}

Test(nginx_feed, ten_changes_within_the_gap_give_one_reload)
{
    fx.cfg.nginx_reload_min_gap_ms = 400;
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t0 = now_ms();
    cr_assert(update(ns, 3, false, t0).ok);
    cr_assert(serves("b1", NULL));
    cr_assert_eq(reloads_run(), 1);

    /* ten state changes within the gap: nothing is applied, one reload becomes due */
    static const node_state seq[10][3] = {
        {OFF, ON, OFF}, {ON, ON, OFF},  {ON, ON, ON},  {OFF, OFF, ON}, {ON, OFF, ON},
        {OFF, ON, ON},  {OFF, OFF, ON}, {ON, OFF, ON}, {ON, ON, OFF}, {OFF, ON, OFF},
    };
    for (int i = 0; i < 10; i++) {
        nodes3(ns, seq[i][0], seq[i][1], seq[i][2]);
        nginx_feed_outcome o = update(ns, 3, false, t0 + 10 + i * 30);
        cr_expect_not(o.attempted, "change %d applied inside the gap", i);
        cr_expect_eq(nginx_feed_due_ms(fx.feed), t0 + 400);
    }
    cr_expect_eq(reloads_run(), 1);
    cr_expect(serves("b1", NULL), "still the old upstream");
    /* one ms early: still pending */
    cr_expect_not(update(ns, 3, false, t0 + 399).attempted);
    /* at the due time the latest state (only n2 online) is applied with one reload */
    nginx_feed_outcome o = update(ns, 3, false, t0 + 400);
    cr_expect(o.attempted && o.ok, "%s", o.error);
    cr_expect_eq(reloads_run(), 2);
    cr_expect_eq(nginx_feed_due_ms(fx.feed), 0);
    cr_expect(serves("b2", NULL));
}

Test(nginx_feed, changes_that_cancel_out_within_the_gap_cost_nothing)
{
    fx.cfg.nginx_reload_min_gap_ms = 400;
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, ON, OFF);
    int64_t t0 = now_ms();
    cr_assert(update(ns, 3, false, t0).ok);
    nodes3(ns, ON, OFF, OFF); /* node 2 flaps */
    cr_expect_not(update(ns, 3, false, t0 + 50).attempted);
    cr_expect_neq(nginx_feed_due_ms(fx.feed), 0);
    nodes3(ns, ON, ON, OFF); /* and is back before the gap ends */
    cr_expect_not(update(ns, 3, false, t0 + 100).attempted);
    cr_expect_eq(nginx_feed_due_ms(fx.feed), 0, "nothing left to apply");
    cr_expect_eq(reloads_run(), 1);
}

Test(nginx_feed, wall_clock_stepping_back_does_not_stall_the_feed)
{
    fx.cfg.nginx_reload_min_gap_ms = 1000;
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    nodes3(ns, OFF, ON, OFF);
    nginx_feed_outcome o = update(ns, 3, false, t - 3600 * 1000); /* NTP stepped back 1 h */
    cr_expect(o.attempted && o.ok, "a change is not held back for an hour: %s", o.error);
    cr_expect(serves("b2", NULL));
}

Test(nginx_feed, failing_validation_keeps_last_good_and_recovers)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    cr_assert(serves("b1", NULL));
    char *good = read_text(fx.include);

    write_text(fx.failmark, "");
    nodes3(ns, OFF, ON, OFF);
    nginx_feed_outcome o = update(ns, 3, false, t + 1000);
    cr_expect(o.attempted);
    cr_expect_not(o.ok);
    cr_expect(strstr(o.error, "validation failed"), "%s", o.error);
    cr_expect(strstr(o.error, "simulated validation failure"), "command output in: %s", o.error);
    char *now = read_text(fx.include);
    cr_expect_str_eq(now, good, "the include is back to the last good bytes");
    free(now);
    cr_expect_eq(reloads_run(), 1, "no reload after a failed validation");
    for (int i = 0; i < 10; i++)
        cr_expect_str_eq(get_body(NULL), "b1", "nginx keeps serving the last good config");
    kg_nginx_view st;
    nginx_feed_status(fx.feed, &st);
    cr_expect_not(st.last_ok);
    cr_expect_eq(st.reloads_failed, 1);
    cr_expect(strstr(st.last_error, "validation failed"));
    cr_expect_eq(st.routed_nodes, 1);

    /* validation works again: the next good render applies */
    unlink(fx.failmark);
    nodes3(ns, OFF, OFF, ON);
    o = update(ns, 3, false, t + 2000);
    cr_expect(o.attempted && o.ok, "%s", o.error);
    cr_expect(serves("b3", NULL));
    nginx_feed_status(fx.feed, &st);
    cr_expect(st.last_ok);
    cr_expect_str_eq(st.last_error, "");
    free(good);
}

Test(nginx_feed, same_failing_bytes_back_off_instead_of_retrying_every_update)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    write_text(fx.failmark, "");
    nodes3(ns, OFF, ON, OFF);
    cr_expect_not(update(ns, 3, false, t + 1000).ok);
    int64_t due = nginx_feed_due_ms(fx.feed);
    cr_expect(due >= t + 1000 + 5000, "retry is scheduled with a back-off, due %lld",
              (long long)(due - t));
    cr_expect_not(update(ns, 3, false, t + 2000).attempted, "no retry before the back-off");
    unlink(fx.failmark);
    nginx_feed_outcome o = update(ns, 3, false, due);
    cr_expect(o.attempted && o.ok, "retried when due: %s", o.error);
    cr_expect(serves("b2", NULL));
}

Test(nginx_feed, template_producing_invalid_config_is_rolled_back)
{
    /* a private copy of the template that the test can break and repair */
    char tpath[300];
    snprintf(tpath, sizeof tpath, "%s/custom.tmpl", fx.dir);
    char *orig = read_text(fx.tmpl);
    cr_assert_not_null(orig);
    write_text(tpath, orig);
    fx.cfg.nginx_template = tpath;
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    char *good = read_text(fx.include);

    size_t len = strlen(orig) + 64;
    char *bad = malloc(len);
    snprintf(bad, len, "bogus_directive on;\n%s", orig);
    write_text(tpath, bad);
    nodes3(ns, OFF, ON, OFF);
    nginx_feed_outcome o = update(ns, 3, false, t + 1000);
    cr_expect_not(o.ok);
    cr_expect(strstr(o.error, "bogus_directive"), "nginx -t output in: %s", o.error);
    char *now = read_text(fx.include);
    cr_expect_str_eq(now, good);
    free(now);
    cr_expect_str_eq(get_body(NULL), "b1");

    write_text(tpath, orig); /* repaired template, read again because it changed */
    o = update(ns, 3, false, t + 2000);
    cr_expect(o.attempted && o.ok, "%s", o.error);
    cr_expect(serves("b2", NULL));
    free(bad);
    free(good);
    free(orig);
}

Test(nginx_feed, template_with_syntax_error_keeps_previous_template)
{
    char tpath[300];
    snprintf(tpath, sizeof tpath, "%s/custom.tmpl", fx.dir);
    char *orig = read_text(fx.tmpl);
    write_text(tpath, orig);
    fx.cfg.nginx_template = tpath;
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    write_text(tpath, "{{#nodes}} unclosed");
    nodes3(ns, OFF, ON, OFF);
    nginx_feed_outcome o = update(ns, 3, false, t + 1000);
    cr_expect_not(o.ok, "the broken template is reported");
    cr_expect(strstr(o.error, "never closed"), "%s", o.error);
    cr_expect(serves("b2", NULL), "routing still follows node health with the old template");
    /* reported once, not on every update */
    o = update(ns, 3, false, t + 2000);
    cr_expect_not(o.attempted, "%s", o.error);
    nodes3(ns, OFF, OFF, ON);
    o = update(ns, 3, false, t + 3000);
    cr_expect(o.attempted && o.ok, "%s", o.error);
    cr_expect(serves("b3", NULL));
    kg_nginx_view st;
    nginx_feed_status(fx.feed, &st);
    cr_expect(strstr(st.last_error, "never closed"), "still visible: %s", st.last_error);
    write_text(tpath, orig);
    nodes3(ns, ON, OFF, OFF);
    o = update(ns, 3, false, t + 4000);
    cr_expect(o.attempted && o.ok, "%s", o.error);
    nginx_feed_status(fx.feed, &st);
    cr_expect_str_eq(st.last_error, "", "repaired template: problem gone");
    free(orig);
}

Test(nginx_feed, hostile_hosts_never_reach_the_file)
{
    fx.feed = new_feed();
    kg_node_view ns[8];
    nodes3(ns, ON, OFF, OFF);
    static const char *hostile[] = {"evil:80\n}", "evil:80;", "evil{:80", "evil host:80",
                                    "evil:99999"};
    for (int i = 0; i < 5; i++) {
        ns[3 + i] = ns[0];
        snprintf(ns[3 + i].id, sizeof ns[3 + i].id, "x%d", i);
        snprintf(ns[3 + i].host, sizeof ns[3 + i].host, "%s", hostile[i]);
    }
    char *longhost = malloc(KG_HOST_MAX + 1);
    memset(longhost, 'a', KG_HOST_MAX);
    longhost[KG_HOST_MAX] = 0;
    snprintf(ns[7].host, sizeof ns[7].host, "%s", longhost);
    nginx_feed_outcome o = update(ns, 8, false, now_ms());
    cr_expect(o.attempted && o.ok, "the valid nodes are applied: %s", o.error);
    cr_expect(strstr(o.error, "5 node(s) left out"), "rejections reported: %s", o.error);
    char *file = read_text(fx.include);
    cr_expect_null(strstr(file, "evil"));
    cr_expect_null(strstr(file, "aaaaaaaaaa"));
    cr_expect_null(strstr(file, "x0"));
    free(file);
    kg_nginx_view st;
    nginx_feed_status(fx.feed, &st);
    cr_expect_eq(st.rejected_nodes, 5);
    cr_expect(strstr(st.last_error, "left out"));
    cr_expect(serves("b1", NULL));
    free(longhost);
}

Test(nginx_feed, panic_freeze_keeps_the_file)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, ON, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    struct stat st1, st2;
    stat(fx.include, &st1);
    char *before = read_text(fx.include);
    nodes3(ns, OFF, OFF, OFF);
    nginx_feed_outcome o = update(ns, 3, true, t + 5000);
    cr_expect_not(o.attempted);
    cr_expect(o.ok);
    stat(fx.include, &st2);
    cr_expect_eq(st1.st_ino, st2.st_ino);
    char *after = read_text(fx.include);
    cr_expect_str_eq(after, before);
    cr_expect_eq(nginx_feed_due_ms(fx.feed), 0);
    cr_expect_eq(reloads_run(), 1);
    free(before);
    free(after);
}

Test(nginx_feed, no_node_online_keeps_every_node_and_passes_nginx_t)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, OFF, OFF, NODE_RECOVERING);
    nginx_feed_outcome o = update(ns, 3, false, now_ms());
    cr_expect(o.ok, "%s", o.error);
    kg_nginx_view st;
    nginx_feed_status(fx.feed, &st);
    cr_expect(st.fallback_all);
    cr_expect_eq(st.routed_nodes, 3);
    /* nginx still reaches the nodes (they answer: the probes were wrong) */
    cr_expect(strcmp(get_body(NULL), "") != 0);

    /* no node at all, and an IPv6 node: still valid nginx configuration */
    o = update(NULL, 0, false, now_ms() + 1000);
    cr_expect(o.attempted && o.ok, "empty list: %s", o.error);
    kg_node_view v6 = ns[0];
    v6.state = ON;
    snprintf(v6.host, sizeof v6.host, "[::1]:%d", fx.b[0]);
    o = update(&v6, 1, false, now_ms() + 2000);
    cr_expect(o.attempted && o.ok, "IPv6: %s", o.error);
}

Test(nginx_feed, failed_reload_is_retried_when_due)
{
    static char cmd[1400], mark[300];
    snprintf(mark, sizeof mark, "%s/fail-reload", fx.dir);
    snprintf(cmd, sizeof cmd, "test ! -e %.256s && %.1024s", mark, fx.reload_cmd);
    fx.cfg.nginx_reload_cmd = cmd;
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t = now_ms();
    cr_assert(update(ns, 3, false, t).ok);
    write_text(mark, "");
    nodes3(ns, OFF, ON, OFF);
    nginx_feed_outcome o = update(ns, 3, false, t + 1000);
    cr_expect(o.attempted && !o.ok);
    cr_expect(strstr(o.error, "reload failed"), "%s", o.error);
    int64_t due = nginx_feed_due_ms(fx.feed);
    cr_expect_gt(due, t + 1000, "a retry is scheduled");
    unlink(mark);
    o = update(ns, 3, false, due);
    cr_expect(o.attempted && o.ok, "retried: %s", o.error);
    cr_expect(serves("b2", NULL));
    kg_nginx_view st;
    nginx_feed_status(fx.feed, &st);
    cr_expect_eq(st.reloads_ok, 2);
    cr_expect_eq(st.reloads_failed, 1);
}

Test(nginx_feed, hung_command_is_killed_at_the_timeout)
{
    fx.cfg.nginx_test_cmd = "echo started; sleep 20";
    fx.feed = new_feed();
    nginx_feed_set_command_timeout_ms(fx.feed, 300);
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    int64_t t0 = now_ms();
    nginx_feed_outcome o = update(ns, 3, false, t0);
    int64_t took = now_ms() - t0;
    cr_expect_not(o.ok);
    cr_expect(strstr(o.error, "timed out"), "%s", o.error);
    cr_expect(strstr(o.error, "started"), "output before the hang is kept: %s", o.error);
    /* two runs (the new file, then the restored one), each bounded by the timeout */
    cr_expect_lt(took, 2500, "took %lld ms", (long long)took);
    cr_expect_eq(reloads_run(), 0);
}

Test(nginx_feed, restart_with_the_same_nodes_costs_no_reload)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, ON, OFF);
    cr_assert(update(ns, 3, false, now_ms()).ok);
    int reloads = reloads_run();
    nginx_feed_free(fx.feed);

    fx.feed = new_feed(); /* kumaguard restarted; nginx still runs the same include */
    nginx_feed_outcome o = update(ns, 3, false, now_ms());
    cr_expect_not(o.attempted, "identical bytes must not be rewritten or reloaded");
    cr_expect_eq(reloads_run(), reloads);
    kg_nginx_view st;
    nginx_feed_status(fx.feed, &st);
    cr_expect_eq(st.routed_nodes, 2, "counts come from the render even when skipped");
    nodes3(ns, ON, ON, ON); /* a real change still applies */
    o = update(ns, 3, false, now_ms());
    cr_expect(o.attempted && o.ok, "%s", o.error);
    cr_expect_eq(reloads_run(), reloads + 1);
}

Test(nginx_feed, last_good_copy_survives_a_restart)
{
    fx.feed = new_feed();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    cr_assert(update(ns, 3, false, now_ms()).ok);
    char *good = read_text(fx.include);
    nginx_feed_free(fx.feed);

    fx.feed = new_feed(); /* kumaguard restarted */
    write_text(fx.failmark, "");
    nodes3(ns, OFF, OFF, ON);
    nginx_feed_outcome o = update(ns, 3, false, now_ms());
    cr_expect_not(o.ok);
    char *now = read_text(fx.include);
    cr_expect_str_eq(now, good, "restored from <state_dir>/nginx-last-good.conf");
    free(now);
    free(good);
}

Test(nginx_feed, disabled_without_include_path)
{
    kg_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[128] = "";
    kg_nginx_feed *f = nginx_feed_new(&cfg, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    kg_node_view ns[3];
    nodes3(ns, ON, ON, ON);
    nginx_feed_outcome o;
    nginx_feed_update(f, ns, 3, false, now_ms(), &o);
    cr_expect_not(o.attempted);
    kg_nginx_view st;
    nginx_feed_status(f, &st);
    cr_expect_not(st.enabled);
    cr_expect_eq(nginx_feed_due_ms(f), 0);
    nginx_feed_free(f);
}

Test(nginx_feed, missing_template_is_a_startup_error)
{
    fx.cfg.nginx_template = "/nonexistent/kg.tmpl";
    char err[256] = "";
    kg_nginx_feed *f = nginx_feed_new(&fx.cfg, err, sizeof err);
    cr_expect_null(f);
    cr_expect(strstr(err, "/nonexistent/kg.tmpl"), "%s", err);
    nginx_feed_free(f);
}

/* ---- the worker thread (nginx_worker.h) ------------------------------------------------------
 * The controller submits the node list with every snapshot (hundreds a second with 1,000
 * nodes); the worker must render only when the include could change, and still notice an
 * edited template while no list comes. */

static kg_nginx_view worker_status(void)
{
    kg_nginx_view v;
    nginx_worker_status(&v);
    return v;
}

/* Waits (bounded: 5 s) until the worker has done `reloads` successful reloads. */
static kg_nginx_view wait_reloads(int64_t reloads)
{
    kg_nginx_view v = worker_status();
    for (int i = 0; i < 250 && v.reloads_ok < reloads; i++) {
        sleep_ms(20);
        v = worker_status();
    }
    cr_assert_geq(v.reloads_ok, reloads, "%lld reloads, want %lld: %s",
                  (long long)v.reloads_ok, (long long)reloads, v.last_error);
    return v;
}

/* Servers listed in `upstream kuma_cluster { ... }` of an include. */
static int count_servers_in_cluster(const char *inc)
{
    const char *p = strstr(inc, "upstream kuma_cluster {");
    const char *end = p ? strchr(p, '}') : NULL;
    int n = 0;
    for (const char *q = p ? strstr(p, "server ") : NULL; q && q < end; q = strstr(q + 1, "server "))
        n++;
    return n;
}

static void start_worker(void)
{
    char err[256] = "";
    cr_assert_eq(nginx_worker_start(new_feed(), err, sizeof err), 0, "%s", err);
    fx.feed = NULL; /* the worker owns it now (freed by nginx_worker_stop) */
}

static void stop_worker(void)
{
    nginx_worker_stop();
    mailbox_drain(); /* its outcome messages, which no controller read */
}

Test(nginx_feed, worker_renders_only_lists_that_change_the_include)
{
    start_worker();
    kg_node_view ns[3];
    nodes3(ns, ON, ON, OFF);
    nginx_worker_submit(ns, 3, false);
    kg_nginx_view v = wait_reloads(1);
    cr_assert_eq(v.renders, 1);

    /* probe bookkeeping changes on every snapshot; none of it is in the include */
    for (int i = 0; i < 50; i++) {
        for (int k = 0; k < 3; k++) {
            ns[k].last_probe_ms += 1000;
            ns[k].last_latency_ms = 1.5 + i;
            ns[k].consecutive_successes = i;
            ns[k].probes_total = i;
        }
        ns[0].state = i % 2 ? NODE_SUSPECT : NODE_ONLINE; /* suspect is routed all the same */
        nginx_worker_submit(ns, 3, false);
    }
    sleep_ms(300);
    v = worker_status();
    cr_expect_eq(v.renders, 1, "lists that say the same were rendered %lld times",
                 (long long)v.renders - 1);
    cr_expect_eq(v.reloads_ok, 1);

    ns[2].state = ON; /* this one changes the include */
    nginx_worker_submit(ns, 3, false);
    v = wait_reloads(2);
    cr_expect_eq(v.renders, 2);
    char *now = read_text(fx.include);
    cr_expect(strstr(now, "\n    server 127.0.0.1:"), "%s", now);
    cr_expect_eq(count_servers_in_cluster(now), 3, "n3 joined kuma_cluster:\n%s", now);
    free(now);
    cr_expect_eq(reloads_run(), 2);
    stop_worker();
}

Test(nginx_feed, worker_follows_an_edited_template_without_a_new_list)
{
    char tpath[300];
    snprintf(tpath, sizeof tpath, "%s/custom.tmpl", fx.dir);
    char *orig = read_text(fx.tmpl);
    cr_assert_not_null(orig);
    write_text(tpath, orig);
    fx.cfg.nginx_template = tpath;
    start_worker();
    kg_node_view ns[3];
    nodes3(ns, ON, OFF, OFF);
    nginx_worker_submit(ns, 3, false);
    wait_reloads(1);

    size_t len = strlen(orig) + 64;
    char *edited = malloc(len);
    snprintf(edited, len, "# edited by the operator\n%s", orig);
    write_text(tpath, edited);
    wait_reloads(2); /* no submission: the worker looked at the template by itself */
    char *now = read_text(fx.include);
    cr_expect(strstr(now, "# edited by the operator"), "the include follows the template");
    free(now);
    free(edited);
    free(orig);
    stop_worker();
}
