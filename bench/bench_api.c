/* bench_api.c — the HTTP API alone, for bench/api_bench.sh: api_start() on a synthetic
 * ten-node snapshot (the fixture of the API tests), a fake controller answering actions with
 * 202, and optionally a new snapshot every --publish-ms (which invalidates the cached
 * /api/system-status body, as a real probe round does).  No database, no probes.
 *
 *   bench_api [--listen 127.0.0.1:0] [--nodes 10] [--threads 2] [--publish-ms 0]
 *
 * Prints "bench_api listening on 127.0.0.1:PORT" when ready; stops on SIGINT/SIGTERM.
 * Owns: nothing of the product.  Must not: be used as a server for anything but measuring. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tests/unit/api_fixture.h"
#include "api.h"
#include "config.h"
#include "log.h"
#include "mailbox.h"
#include "snapshot.h"

extern char **environ;

static atomic_bool stop_flag;

static void *fake_controller(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_flag)) {
        kg_msg *m = mailbox_wait(100);
        if (!m)
            continue;
        reply_finish(m->reply, 202, NULL, "accepted by the benchmark's fake controller");
        mailbox_free(m);
    }
    return NULL;
}

static void *publisher(void *arg)
{
    int every_ms = *(int *)arg;
    int nodes = ((int *)arg)[1];
    int64_t next_id = 6;
    while (!atomic_load(&stop_flag)) {
        struct timespec ts = {every_ms / 1000, (long)(every_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        kg_snapshot *s = fixture_snapshot(nodes);
        if (!s)
            continue;
        int k = s->n_recent_events;
        if (k < KG_RECENT_EVENTS) {
            fixture_event(&s->recent_events[k], next_id++, EV_STATE_CHANGE, "node01", "online",
                          "online", 0);
            s->n_recent_events = k + 1;
        }
        snapshot_publish(s);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0";
    const char *threads = "2";
    int pub[2] = {0, 10}; /* publish every ms, node count */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen"))
            listen = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            threads = argv[i + 1];
        else if (!strcmp(argv[i], "--publish-ms"))
            pub[0] = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--nodes"))
            pub[1] = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_api [--listen H:P] [--nodes N] [--threads N] "
                            "[--publish-ms MS]\n");
            return 2;
        }
    }
    if (pub[1] < 1 || pub[1] > 99) {
        fprintf(stderr, "bench_api: --nodes must be 1..99\n");
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char *args[] = {"bench_api", "--listen", (char *)listen, "--http-threads", (char *)threads,
                    "--log-level", "warn", NULL};
    kg_config cfg;
    char err[256];
    char *noenv[] = {NULL};
    if (config_load(&cfg, 7, args, noenv, stdout, err, sizeof err) != 0) {
        fprintf(stderr, "bench_api: %s\n", err);
        return 2;
    }
    log_set_level(LOG_WARN);
    snapshot_publish(fixture_snapshot(pub[1]));
    pthread_t ctl, pubt;
    pthread_create(&ctl, NULL, fake_controller, NULL);
    if (pub[0] > 0)
        pthread_create(&pubt, NULL, publisher, pub);
    kg_api *api = api_start(&cfg, err, sizeof err);
    if (!api) {
        fprintf(stderr, "bench_api: %s\n", err);
        return 1;
    }
    printf("bench_api listening on 127.0.0.1:%d\n", api_bound_port(api));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    api_stop(api);
    atomic_store(&stop_flag, true);
    pthread_join(ctl, NULL);
    if (pub[0] > 0)
        pthread_join(pubt, NULL);
    snapshot_shutdown();
    snapshot_clear();
    config_free(&cfg);
    return 0;
}
