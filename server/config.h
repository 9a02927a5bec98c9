/* config.h — every setting of kumaguard: environment variable, command-line flag, default.
 *
 * Owns: parsing and validating settings (flag wins over env, env over default), --help text,
 * redacted dumps.  Must not: open files other than the *_FILE secrets, touch the network or the
 * database, or keep global state — the parsed config is a plain value passed to the modules. */
#ifndef KG_CONFIG_H
#define KG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "netpolicy.h"
#include "types.h"

#define KG_MAX_STATIC_NODES 64
#define KG_CONFIG_MAX_WARNINGS 4

typedef struct {
    char id[KG_NODE_ID_MAX + 1];
    char host[KG_HOST_MAX + 1];
} kg_static_node;

typedef struct {
    /* cluster database */
    char *db_host;       /* NULL = embedded SQLite */
    int db_port;
    char *db_user;
    char *db_password;   /* secret */
    char *db_name;
    int db_timeout_ms;
    char *sqlite_path;   /* NULL = <state_dir>/cluster.db (filled in by config_finish) */
    bool init_schema;

    /* local */
    char *state_dir;
    char *listen;        /* host:port */
    char *api_token;     /* secret; NULL = actions only from loopback */
    char *web_dir;
    int http_threads;
    int http_max_connections;        /* in total */
    int http_max_per_client;         /* per client address (IPv6: per /64); proxies exempt */
    int http_idle_timeout_ms;        /* silence after which a connection is closed */
    int event_streams_max;           /* /api/events streams in total */
    int event_streams_per_client;
    char *trusted_proxies;           /* CIDR list text; parsed into trusted_proxy_nets */
    kg_cidr_list trusted_proxy_nets;
    char *log_level;     /* error, warn, info, debug */
    char *instance_id;   /* NULL = hostname:pid */

    /* nodes and health */
    kg_static_node static_nodes[KG_MAX_STATIC_NODES];
    int n_static_nodes;
    int health_interval_ms;
    int health_fast_interval_ms;
    int health_timeout_ms;
    char *health_path;
    int health_expected_status;
    int fall;
    int rise;
    double panic_share;  /* more than this share of nodes failing at once = panic */
    int panic_max_hold_ms;         /* 0 = the guard holds until an operator overrides */
    int panic_release_interval_ms; /* after the max hold: one more failing node per interval */
    char *node_networks; /* CIDR list text; parsed into node_policy.allowed */
    kg_netpolicy node_policy; /* where nodes may be probed and sent the key (netpolicy.h) */

    /* assignments */
    int monitor_limit;
    int recovery_hold_down_ms;
    int revert_batch_size;
    int revert_batch_interval_ms;
    double balance_tolerance;      /* rebalance brings every node within mean*(1±tol) */
    double auto_rebalance_spread;  /* 0 = off; else auto rebalance when (max-min)/mean exceeds it */
    int move_batch_size;
    int move_batch_interval_ms;    /* pause between rebalance batches */
    int refresh_interval_ms;       /* how often monitor counts are re-read */
    int lease_ttl_ms;
    int db_retry_max_ms;           /* cap of the reconnect back-off */

    /* nginx feed */
    char *nginx_include;  /* NULL = no nginx feed */
    char *nginx_template;
    char *nginx_test_cmd;
    char *nginx_reload_cmd;
    int nginx_reload_min_gap_ms;

    /* Kuma nodes */
    char *kuma_api_key;   /* secret; NULL = no reconcile nudge */
    char *reconcile_path;
    int reconcile_base_ms;        /* worst case of any reconcile call */
    int reconcile_start_ms;       /* worst case per monitor a node starts */
    int reconcile_stop_ms;        /* worst case per monitor a node stops */
    int reconcile_timeout_max_ms; /* cap on one call's deadline */
    int kuma_cron_skew_ms;        /* how far a node's clock may be from ours */
    int reconcile_budget;         /* calls per node per 15 minutes */
    bool reconcile_pacing;        /* give a node no more than it can start before its cron */

    /* Warnings for the caller to log once logging is set up (config does not log): secrets
     * given as flags, which every local user can read in `ps`. */
    char warnings[KG_CONFIG_MAX_WARNINGS][256];
    int n_warnings;

    /* webhooks (webhook.h): two sinks, each URL, secret, kinds, format */
    char *webhook_url;    /* secret (a Slack URL is a credential); NULL = no webhook */
    char *webhook_secret; /* secret: HMAC-SHA256 key for X-Kumaguard-Signature */
    char *webhook_events; /* comma-separated kinds or "all" */
    char *webhook_format; /* json, slack, discord */
    char *webhook2_url;
    char *webhook2_secret;
    char *webhook2_events;
    char *webhook2_format;
    int webhook_timeout_ms;
    int webhook_retry_window_ms;
    int webhook_queue;    /* events waiting per sink before the oldest is dropped */
} kg_config;

/* Fills defaults, then the environment, then argv.  On error returns -1 and writes a message
 * naming the setting and what is expected into err.  Returns 1 when --help or --version was
 * printed to `out` (caller exits 0), 0 when the config is ready. */
int config_load(kg_config *cfg, int argc, char **argv, char **envp, FILE *out, char *err,
                size_t errlen);
void config_free(kg_config *cfg);

/* Parses "500ms", "2s", "1m", "1h" or a plain number in legacy_unit_ms.  -1 on error. */
long long config_parse_duration_ms(const char *s, long long legacy_unit_ms);
/* Parses "id=host:port[,id=host:port...]" into cfg->static_nodes (appends). -1 + err. */
int config_parse_nodes(kg_config *cfg, const char *s, char *err, size_t errlen);

/* Writes the --help text (every setting, env var, flag, default). */
void config_print_help(FILE *out);
/* JSON object of the effective settings with secrets replaced by "(redacted)" / null.
 * Returns a malloc'd string. */
char *config_to_json_redacted(const kg_config *cfg);

#endif
