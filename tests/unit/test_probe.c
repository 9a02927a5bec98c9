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
