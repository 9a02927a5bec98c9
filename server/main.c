/* main.c — kumaguard's entry point: parse settings, start the threads, wait for a signal,
 * stop everything in reverse order.
 *
 * Threads: the controller (owner of cluster state, decides), its appliers (database, reconcile
 * calls, nginx, history — started and stopped by controller.c), the prober (HTTP health checks)
 * and the HTTP server's pool.  They share state only through snapshot.h (outward) and
 * mailbox.h (inward).  Beside them, the webhook senders take events from the controller
 * through their own queues (webhook.h) and the first-run setup watcher reports through the
 * mailbox (setup_watch.h).  Must not: contain product logic. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "controller.h"
#include "log.h"
#include "netpolicy_curl.h"
#include "probe.h"
#include "setup_watch.h"
#include "snapshot.h"
#include "webhook.h"

extern char **environ;

int main(int argc, char **argv)
{
    kg_config cfg;
    char err[512] = "";
    int rc = config_load(&cfg, argc, argv, environ, stdout, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "kumaguard: %s\n", err);
        config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    log_set_level((kg_log_level)log_parse_level(cfg.log_level));
    for (int i = 0; i < cfg.n_warnings; i++)
        log_warn("%s", cfg.warnings[i]);
    /* The node network policy is complete (the database's resolved addresses included) and
     * installed before any thread that connects to a node starts; it never changes after. */
    netpolicy_resolve_db(&cfg.node_policy);
    netpolicy_curl_install(&cfg.node_policy);

    /* Signals are taken synchronously by this thread only; block them before any thread
     * starts so every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "kumaguard: curl_global_init failed\n");
        config_free(&cfg);
        return 1;
    }
    int exit_code = 1;
    kg_api *api = NULL;
    bool prober_up = false;
    /* before the controller: its first events go out, and its first nginx render already
     * knows whether first-run setup is pending */
    if (webhook_start(&cfg, err, sizeof err) != 0 || setup_watch_start(&cfg, err, sizeof err)) {
        fprintf(stderr, "kumaguard: %s\n", err);
        goto out;
    }
    /* The prober before the controller too: the controller asks it for probe rounds from its
     * first step, so the prober's state must exist before that thread does (its results wait
     * in the mailbox, and it probes nothing before the first snapshot names the nodes). */
    if (prober_start(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "kumaguard: %s\n", err);
        goto out;
    }
    prober_up = true;
    if (controller_start(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "kumaguard: %s\n", err);
        goto stop_controller;
    }
    api = api_start(&cfg, err, sizeof err);
    if (!api) {
        fprintf(stderr, "kumaguard: %s\n", err);
        goto stop_controller;
    }
    log_info("kumaguard listening on http://%s/ (store: %s, %d static nodes)", cfg.listen,
             cfg.db_host ? "mariadb" : cfg.sqlite_path, cfg.n_static_nodes);
    int sig = 0;
    do {
        sigwait(&set, &sig);
    } while (sig == SIGHUP); /* nothing to reload yet; HUP must not kill the daemon */
    log_info("signal %d: stopping", sig);
    exit_code = 0;
    api_stop(api);
stop_controller:
    /* controller first: it may still ask the prober for a round; the prober's late results
     * then meet a closed mailbox, which is harmless */
    controller_stop();
    if (prober_up)
        prober_stop();
out:
    setup_watch_stop();
    webhook_stop(); /* after the controller: its last events were queued */
    snapshot_shutdown();
    snapshot_clear();
    curl_global_cleanup();
    config_free(&cfg);
    return exit_code;
}
