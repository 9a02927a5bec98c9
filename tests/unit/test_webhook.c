/* test_webhook.c — the pure parts of webhook.c: settings parsers, back-off, payloads and the
 * HMAC-SHA256 signature (vectors computed with Python's hmac module, an independent
 * implementation).  Delivery, retries and outages run against a real receiver in
 * tests/integration/test_webhooks.py. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "webhook.h"

Test(webhook, signature_matches_an_independent_hmac_sha256)
{
    char hex[65];
    const char *body = "what do ya want for nothing?";
    webhook_signature("Jefe", "1700000000", body, strlen(body), hex);
    cr_expect_str_eq(hex, "1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e");
    /* a key longer than SHA-256's block is hashed first */
    char key[101];
    memset(key, 'k', 100);
    key[100] = '\0';
    webhook_signature(key, "1", "{}", 2, hex);
    cr_expect_str_eq(hex, "5a3cea565c7c1096e8ae387825a7997028a7399dfb36bf0eb69f7088a72092f4");
    /* the timestamp is signed too: a replayed body with a new timestamp does not verify */
    char other[65];
    webhook_signature(key, "2", "{}", 2, other);
    cr_expect_str_neq(hex, other);
}

Test(webhook, kinds_format_and_url_settings)
{
    uint32_t mask;
    char err[128];
    cr_assert_eq(webhook_parse_kinds(KG_WEBHOOK_DEFAULT_EVENTS, &mask, err, sizeof err), 0,
                 "%s", err);
    cr_expect(mask & (1u << EV_FAILOVER) && mask & (1u << EV_RECONCILE_FAILED) &&
              mask & (1u << EV_DB));
    cr_expect(!(mask & (1u << EV_STATE_CHANGE)) && !(mask & (1u << EV_NGINX_RELOAD)),
              "routine events are not sent by default");
    cr_assert_eq(webhook_parse_kinds(" failover , operator", &mask, err, sizeof err), 0);
    cr_expect_eq(mask, (1u << EV_FAILOVER) | (1u << EV_OPERATOR));
    cr_assert_eq(webhook_parse_kinds("all", &mask, err, sizeof err), 0);
    cr_expect_eq(mask, (1u << EV_KIND_COUNT) - 1);
    cr_expect_eq(webhook_parse_kinds("failover,explosion", &mask, err, sizeof err), -1);
    cr_expect(strstr(err, "explosion") != NULL, "%s", err);
    cr_expect_eq(webhook_parse_kinds("failover,,revert", &mask, err, sizeof err), -1);
    cr_expect_eq(webhook_parse_kinds("", &mask, err, sizeof err), -1);

    webhook_format f;
    cr_expect(webhook_parse_format("Slack", &f) == 0 && f == WEBHOOK_SLACK);
    cr_expect(webhook_parse_format("discord", &f) == 0 && f == WEBHOOK_DISCORD);
    cr_expect_eq(webhook_parse_format("teams", &f), -1);

    char target[160];
    cr_assert_eq(webhook_parse_url("https://hooks.slack.com/services/T0/B0/secret", target,
                                   sizeof target, err, sizeof err), 0);
    cr_expect_str_eq(target, "https://hooks.slack.com", "the path (a credential) is not shown");
    cr_assert_eq(webhook_parse_url("http://user:pw@127.0.0.1:9000/x?y", target, sizeof target,
                                   err, sizeof err), 0);
    cr_expect_str_eq(target, "http://127.0.0.1:9000", "nor are credentials in the authority");
    cr_expect_eq(webhook_parse_url("ftp://x/", target, sizeof target, err, sizeof err), -1);
    cr_expect_eq(webhook_parse_url("http:///path", target, sizeof target, err, sizeof err), -1);
    cr_expect_eq(webhook_parse_url("http://a b/", target, sizeof target, err, sizeof err), -1);
}

Test(webhook, backoff_doubles_from_one_second_to_a_minute)
{
    cr_expect_eq(webhook_backoff_ms(1), 1000);
    cr_expect_eq(webhook_backoff_ms(2), 2000);
    cr_expect_eq(webhook_backoff_ms(3), 4000);
    cr_expect_eq(webhook_backoff_ms(6), 32000);
    cr_expect_eq(webhook_backoff_ms(7), 60000);
    cr_expect_eq(webhook_backoff_ms(1000), 60000);
}

static json_object *body_of(webhook_format f, const kg_event *ev)
{
    size_t len = 0;
    char *b = webhook_body(f, ev, "kg1:42", &len);
    cr_assert_not_null(b);
    cr_expect_eq(strlen(b), len);
    json_object *o = json_tokener_parse(b);
    cr_assert_not_null(o, "%s", b);
    free(b);
    return o;
}

static const char *get_str(json_object *o, const char *k)
{
    json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, k, &v), "missing %s", k);
    return json_object_get_string(v);
}

Test(webhook, payload_formats)
{
    kg_event ev = {.id = 12, .ts_ms = 1795701600123LL, .kind = EV_FAILOVER, .count = 40};
    snprintf(ev.node, sizeof ev.node, "node2");
    snprintf(ev.from, sizeof ev.from, "node2");
    snprintf(ev.to, sizeof ev.to, "several");
    snprintf(ev.reason, sizeof ev.reason, "node2 is offline: \"connection refused\"");
    json_object *o = body_of(WEBHOOK_JSON, &ev);
    cr_expect_str_eq(get_str(o, "kind"), "failover");
    cr_expect_str_eq(get_str(o, "node"), "node2");
    cr_expect_str_eq(get_str(o, "time"), "2026-11-26T14:00:00.123Z");
    cr_expect_str_eq(get_str(o, "instance"), "kg1:42");
    cr_expect_str_eq(get_str(o, "source"), "kumaguard");
    json_object *v;
    cr_assert(json_object_object_get_ex(o, "timestamp", &v) &&
              json_object_is_type(v, json_type_int));
    cr_expect_eq(json_object_get_int64(v), 1795701600);
    cr_assert(json_object_object_get_ex(o, "count", &v) && json_object_get_int(v) == 40);
    cr_expect(strstr(get_str(o, "text"), "node2 → several") != NULL, "%s", get_str(o, "text"));
    json_object_put(o);

    o = body_of(WEBHOOK_SLACK, &ev);
    cr_expect_eq(json_object_object_length(o), 1, "Slack wants only text");
    cr_expect(strstr(get_str(o, "text"), "failover node2") != NULL);
    cr_expect(strstr(get_str(o, "text"), "\"connection refused\"") != NULL, "quotes survive");
    json_object_put(o);
    o = body_of(WEBHOOK_DISCORD, &ev);
    cr_expect_eq(json_object_object_length(o), 1, "Discord wants only content");
    cr_expect(strstr(get_str(o, "content"), "(40 monitors)") != NULL);
    json_object_put(o);
}

Test(webhook, nothing_configured_is_a_quiet_no_op)
{
    kg_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[128] = "";
    cr_assert_eq(webhook_start(&cfg, err, sizeof err), 0, "%s", err);
    kg_event ev = {.id = 1, .kind = EV_FAILOVER};
    webhook_submit(&ev);
    webhook_sink_status st[KG_WEBHOOK_SINKS];
    cr_expect_eq(webhook_status(st, KG_WEBHOOK_SINKS), 0);
    webhook_stop();
}

/* The settings stop start-up with the setting's name; a URL (a credential for Slack) is not
 * echoed; the secret may come from a file. */
Test(webhook, settings_are_validated_at_start_up)
{
    kg_config cfg;
    char err[512];
    char *bad_url[] = {"kumaguard", "--webhook-url", "ftp://hooks.example/T0/secretpath", NULL};
    cr_expect_eq(config_load(&cfg, 3, bad_url, (char *[]){NULL}, stdout, err, sizeof err), -1);
    cr_expect(strstr(err, "KUMAGUARD_WEBHOOK_URL") != NULL, "%s", err);
    cr_expect(strstr(err, "secretpath") == NULL, "the URL is not echoed: %s", err);
    config_free(&cfg);
    char *bad_kind[] = {"kumaguard", "--webhook2-events", "failover,boom", NULL};
    cr_expect_eq(config_load(&cfg, 3, bad_kind, (char *[]){NULL}, stdout, err, sizeof err), -1);
    cr_expect(strstr(err, "KUMAGUARD_WEBHOOK2_EVENTS") && strstr(err, "boom"), "%s", err);
    config_free(&cfg);
    char *bad_fmt[] = {"kumaguard", "--webhook-format", "teams", NULL};
    cr_expect_eq(config_load(&cfg, 3, bad_fmt, (char *[]){NULL}, stdout, err, sizeof err), -1);
    cr_expect(strstr(err, "KUMAGUARD_WEBHOOK_FORMAT") != NULL, "%s", err);
    config_free(&cfg);

    char path[] = "/tmp/kg-webhook-secret-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "s3cret\n", 7), 7);
    close(fd);
    char env_file[400];
    snprintf(env_file, sizeof env_file, "KUMAGUARD_WEBHOOK_SECRET_FILE=%s", path);
    char *envp[] = {"KUMAGUARD_WEBHOOK_URL=http://127.0.0.1:9/hook", env_file, NULL};
    char *argv[] = {"kumaguard", NULL};
    cr_assert_eq(config_load(&cfg, 1, argv, envp, stdout, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(cfg.webhook_secret, "s3cret");
    char *dump = config_to_json_redacted(&cfg);
    cr_expect(strstr(dump, "s3cret") == NULL && strstr(dump, "/hook") == NULL, "%s", dump);
    free(dump);
    config_free(&cfg);
    unlink(path);
}
