/* test_config.c — settings: defaults, env vs flag precedence, durations, node lists, secrets
 * files, and that a bad value stops start-up with a message naming the setting. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static int load(kg_config *c, char **argv, char **envp, char *err, size_t errlen)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = config_load(c, argc, argv, envp, devnull, err, errlen);
    fclose(devnull);
    return rc;
}

Test(config, defaults_match_the_spec)
{
    kg_config c;
    char err[256];
    char *argv[] = {"kumaguard", NULL};
    char *envp[] = {NULL};
    cr_assert_eq(load(&c, argv, envp, err, sizeof err), 0, "%s", err);
    cr_assert_null(c.db_host);
    cr_assert_eq(c.db_port, 3306);
    cr_assert_str_eq(c.db_user, "kuma");
    cr_assert_str_eq(c.db_name, "kuma");
    cr_assert_eq(c.db_timeout_ms, 5000);
    cr_assert_str_eq(c.state_dir, "./kumaguard-state");
    cr_assert_str_eq(c.sqlite_path, "./kumaguard-state/cluster.db");
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_null(c.api_token);
    cr_assert_eq(c.health_interval_ms, 30000);
    cr_assert_eq(c.health_fast_interval_ms, 2000);
    cr_assert_eq(c.health_timeout_ms, 5000);
    cr_assert_str_eq(c.health_path, "/api/v1/health");
    cr_assert_eq(c.fall, 3);
    cr_assert_eq(c.rise, 3);
    cr_assert_eq(c.monitor_limit, 1000);
    cr_assert_eq(c.recovery_hold_down_ms, 30000);
    cr_assert_null(c.nginx_include);
    cr_assert_str_eq(c.nginx_test_cmd, "nginx -t");
    cr_assert_str_eq(c.nginx_reload_cmd, "nginx -s reload");
    cr_assert_null(c.kuma_api_key);
    config_free(&c);
}

Test(config, flag_wins_over_env_and_durations_take_units)
{
    kg_config c;
    char err[256];
    char *argv[] = {"kumaguard", "--health-interval", "500ms", "--fall=5", "--db-host",
                    "/run/mysqld.sock", NULL};
    char *envp[] = {"HEALTH_CHECK_INTERVAL=10", "HEALTH_CHECK_FALL=2", "HEALTH_CHECK_RISE=4",
                    "HEALTH_CHECK_TIMEOUT=2s", "RECOVERY_HOLD_DOWN=1m", "DB_HOST=db", NULL};
    cr_assert_eq(load(&c, argv, envp, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.health_interval_ms, 500);
    cr_assert_eq(c.fall, 5);
    cr_assert_eq(c.rise, 4, "env applies when no flag is given");
    cr_assert_eq(c.health_timeout_ms, 2000);
    cr_assert_eq(c.recovery_hold_down_ms, 60000);
    cr_assert_str_eq(c.db_host, "/run/mysqld.sock");
    config_free(&c);
}

Test(config, legacy_units_of_plain_numbers)
{
    cr_assert_eq(config_parse_duration_ms("30", 1000), 30000);
    cr_assert_eq(config_parse_duration_ms("5000", 1), 5000);
    cr_assert_eq(config_parse_duration_ms("1.5s", 1), 1500);
    cr_assert_eq(config_parse_duration_ms("250ms", 1000), 250);
    cr_assert_eq(config_parse_duration_ms("2h", 1), 7200000);
    cr_assert_eq(config_parse_duration_ms("", 1), -1);
    cr_assert_eq(config_parse_duration_ms("5 s", 1), -1);
    cr_assert_eq(config_parse_duration_ms("-1", 1), -1);
    cr_assert_eq(config_parse_duration_ms("10d", 1), -1);
    cr_assert_eq(config_parse_duration_ms("abc", 1), -1);
    cr_assert_eq(config_parse_duration_ms("99999999999", 1000), -1);
}

static void expect_error(char **argv, char **envp, const char *setting)
{
    kg_config c;
    char err[512] = "";
    cr_assert_eq(load(&c, argv, envp, err, sizeof err), -1, "should fail for %s", setting);
    cr_assert(strstr(err, setting), "error '%s' should name %s", err, setting);
    config_free(&c);
}

Test(config, bad_values_name_the_setting)
{
    char *noargs[] = {"kumaguard", NULL};
    char *e1[] = {"HEALTH_CHECK_FALL=zero", NULL};
    expect_error(noargs, e1, "HEALTH_CHECK_FALL");
    char *e2[] = {"HEALTH_CHECK_INTERVAL=fast", NULL};
    expect_error(noargs, e2, "HEALTH_CHECK_INTERVAL");
    char *e3[] = {"DB_PORT=70000", NULL};
    expect_error(noargs, e3, "DB_PORT");
    char *e4[] = {"MONITOR_LIMIT_PER_NODE=-5", NULL};
    expect_error(noargs, e4, "MONITOR_LIMIT_PER_NODE");
    char *e5[] = {"KUMAGUARD_NODES=node1=evil;host:80", NULL};
    expect_error(noargs, e5, "KUMAGUARD_NODES");
    char *e6[] = {"KUMAGUARD_NODES=node1=host:99999", NULL};
    expect_error(noargs, e6, "KUMAGUARD_NODES");
    char *e7[] = {"KUMAGUARD_LOG_LEVEL=loud", NULL};
    expect_error(noargs, e7, "KUMAGUARD_LOG_LEVEL");
    char *noenv[] = {NULL};
    char *a1[] = {"kumaguard", "--rise", "0", NULL};
    expect_error(a1, noenv, "--rise");
    char *a2[] = {"kumaguard", "--no-such-flag", NULL};
    expect_error(a2, noenv, "--no-such-flag");
    char *a3[] = {"kumaguard", "--listen", NULL};
    expect_error(a3, noenv, "--listen");
    char *a4[] = {"kumaguard", "--health-timeout", "1x", NULL};
    expect_error(a4, noenv, "--health-timeout");
    char *a5[] = {"kumaguard", "--init-schema=maybe", NULL};
    expect_error(a5, noenv, "--init-schema");
}

Test(config, static_nodes_from_env_and_repeated_flags)
{
    kg_config c;
    char err[256];
    char *argv[] = {"kumaguard", NULL};
    char *envp[] = {"KUMAGUARD_NODES=node1=10.0.0.1:3001,n-2=kuma.example:3001,v6=[::1]:3001",
                    NULL};
    cr_assert_eq(load(&c, argv, envp, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.n_static_nodes, 3);
    cr_assert_str_eq(c.static_nodes[1].id, "n-2");
    cr_assert_str_eq(c.static_nodes[1].host, "kuma.example:3001");
    cr_assert_str_eq(c.static_nodes[2].host, "[::1]:3001");
    config_free(&c);

    char *argv2[] = {"kumaguard", "--node", "a=127.0.0.1:1", "--node", "b=127.0.0.1:2", NULL};
    cr_assert_eq(load(&c, argv2, envp, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.n_static_nodes, 2, "flags replace the env list");
    cr_assert_str_eq(c.static_nodes[0].id, "a");
    config_free(&c);
}

Test(config, secrets_come_from_files_and_are_redacted)
{
    char path[] = "/tmp/kg-secret-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "s3cret-password\n", 16), 16);
    close(fd);
    char env1[128];
    snprintf(env1, sizeof env1, "DB_PASSWORD_FILE=%s", path);
    char *argv[] = {"kumaguard", "--api-token", "tok-123456789", NULL};
    char *envp[] = {env1, "KUMA_API_KEY=uk1_abcdef", NULL};
    kg_config c;
    char err[256];
    cr_assert_eq(load(&c, argv, envp, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.db_password, "s3cret-password", "trailing newline stripped");
    char *json = config_to_json_redacted(&c);
    cr_assert_not_null(json);
    cr_assert_null(strstr(json, "s3cret"), "password leaked: %s", json);
    cr_assert_null(strstr(json, "tok-123456789"), "token leaked: %s", json);
    cr_assert_null(strstr(json, "uk1_abcdef"), "api key leaked: %s", json);
    cr_assert(strstr(json, "\"DB_PASSWORD\":\"(redacted)\""), "%s", json);
    free(json);
    config_free(&c);
    unlink(path);

    /* an empty secret file means unset (no empty Authorization header is ever sent) */
    char empty[] = "/tmp/kg-empty-XXXXXX";
    int efd = mkstemp(empty);
    cr_assert(efd >= 0);
    close(efd);
    char env2[128];
    snprintf(env2, sizeof env2, "KUMA_API_KEY_FILE=%s", empty);
    char *envp3[] = {env2, NULL};
    char *argv3[] = {"kumaguard", NULL};
    cr_assert_eq(load(&c, argv3, envp3, err, sizeof err), 0, "%s", err);
    cr_assert_null(c.kuma_api_key);
    config_free(&c);
    unlink(empty);

    char *envp2[] = {"DB_PASSWORD_FILE=/nonexistent/kg", NULL};
    char *argv2[] = {"kumaguard", NULL};
    expect_error(argv2, envp2, "DB_PASSWORD_FILE");
}

Test(config, help_lists_every_spec_setting)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print_help(f);
    fclose(f);
    const char *names[] = {"DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_PASSWORD_FILE",
                           "DB_NAME", "DB_TIMEOUT", "KUMAGUARD_SQLITE_PATH",
                           "KUMAGUARD_STATE_DIR", "KUMAGUARD_LISTEN", "KUMAGUARD_API_TOKEN",
                           "KUMAGUARD_API_TOKEN_FILE", "KUMAGUARD_NODES",
                           "HEALTH_CHECK_INTERVAL", "HEALTH_CHECK_FAST_INTERVAL",
                           "HEALTH_CHECK_TIMEOUT", "HEALTH_CHECK_PATH", "HEALTH_CHECK_FALL",
                           "HEALTH_CHECK_RISE", "MONITOR_LIMIT_PER_NODE", "RECOVERY_HOLD_DOWN",
                           "NGINX_INCLUDE_PATH", "NGINX_TEST_CMD", "NGINX_RELOAD_CMD",
                           "KUMA_API_KEY", "KUMA_API_KEY_FILE", "--db-host", "--db-port",
                           "--db-user", "--db-password", "--db-name", "--db-timeout",
                           "--sqlite-path", "--state-dir", "--listen", "--api-token", "--node",
                           "--health-interval", "--health-fast-interval", "--health-timeout",
                           "--health-path", "--fall", "--rise", "--monitor-limit",
                           "--recovery-hold-down", "--nginx-include", "--nginx-test-cmd",
                           "--nginx-reload-cmd", "--kuma-api-key", "--init-schema"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_assert(strstr(buf, names[i]), "--help does not mention %s", names[i]);
    free(buf);
}

/* Issue 13, row 5: a secret on the command line is readable by every local user (ps).  It
 * still works, but the config hands the caller a warning to log; from the environment or a
 * file it does not. */
Test(config, secrets_given_as_flags_come_with_a_warning)
{
    kg_config c;
    char err[256];
    char *argv[] = {"kumaguard", "--api-token", "flag-token-123", "--db-password", "pw",
                    "--kuma-api-key=k1", "--kuma-api-key", "k2", NULL};
    char *envp[] = {NULL};
    cr_assert_eq(load(&c, argv, envp, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(c.api_token, "flag-token-123");
    cr_expect_str_eq(c.kuma_api_key, "k2");
    cr_assert_eq(c.n_warnings, 3, "one warning per secret flag, not per use");
    const char *want[][3] = {{"--api-token", "KUMAGUARD_API_TOKEN", "KUMAGUARD_API_TOKEN_FILE"},
                             {"--db-password", "DB_PASSWORD", "DB_PASSWORD_FILE"},
                             {"--kuma-api-key", "KUMA_API_KEY", "KUMA_API_KEY_FILE"}};
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 3; k++)
            cr_expect(strstr(c.warnings[i], want[i][k]), "'%s' lacks %s", c.warnings[i],
                      want[i][k]);
        cr_expect(strstr(c.warnings[i], "ps"), "%s", c.warnings[i]);
        cr_expect_null(strstr(c.warnings[i], "flag-token-123"), "the warning names the value");
    }
    config_free(&c);

    char *plain[] = {"kumaguard", NULL};
    char *env[] = {"KUMAGUARD_API_TOKEN=env-token-123", "KUMA_API_KEY=k", NULL};
    cr_assert_eq(load(&c, plain, env, err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.n_warnings, 0);
    config_free(&c);
}

Test(config, connection_limits_and_networks_have_defaults_and_bounds)
{
    kg_config c;
    char err[256];
    char *argv[] = {"kumaguard", NULL};
    char *envp[] = {NULL};
    cr_assert_eq(load(&c, argv, envp, err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.http_max_connections, 512);
    cr_expect_eq(c.http_max_per_client, 32);
    cr_expect_eq(c.http_idle_timeout_ms, 30000);
    cr_expect_eq(c.event_streams_max, 64);
    cr_expect_eq(c.event_streams_per_client, 8);
    cr_expect_eq(c.node_policy.allowed.n, 0);
    cr_expect_eq(c.trusted_proxy_nets.n, 0);
    config_free(&c);
    char *bad[] = {"kumaguard", "--http-max-per-client", "0", NULL};
    cr_expect_eq(load(&c, bad, envp, err, sizeof err), -1);
    cr_expect(strstr(err, "--http-max-per-client"), "%s", err);
    config_free(&c);
    char *env[] = {"KUMAGUARD_HTTP_IDLE_TIMEOUT=500ms", NULL};
    cr_expect_eq(load(&c, argv, env, err, sizeof err), -1);
    cr_expect(strstr(err, "KUMAGUARD_HTTP_IDLE_TIMEOUT"), "%s", err);
    config_free(&c);
}
