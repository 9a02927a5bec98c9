/* test_log.c — the log ring and its rate limit (log.h).  Issue 13, row 11: every aborted
 * connection logged one warning, and one flood pushed everything else out of the 1,000-line
 * ring behind /api/debug-logs. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

static int count_lines(char **lines, int n, const char *needle)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        if (strstr(lines[i], needle))
            c++;
    return c;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void quiet(void)
{
    /* the lines also go to stderr; keep the test output readable */
    cr_redirect_stderr();
    log_set_level(LOG_DEBUG);
    log_set_rate_limit(0, 0);
}

Test(log, a_flood_of_one_warning_cannot_evict_the_ring, .init = quiet)
{
    log_info("the line that must survive");
    for (int i = 0; i < 5000; i++)
        log_warn("http: client %d went away", i);
    char **lines = NULL;
    int n = log_ring_copy(KG_LOG_RING_LINES, &lines);
    cr_expect_eq(count_lines(lines, n, "the line that must survive"), 1,
                 "the earlier line was evicted by the flood");
    cr_expect_eq(count_lines(lines, n, "went away"), KG_LOG_BURST,
                 "only the burst of the flood is written");
    log_ring_free(lines, n);
}

Test(log, keyed_lines_are_limited_at_any_level_and_plain_info_is_not, .init = quiet)
{
    static const char key[] = "libmicrohttpd: closed by remote side";
    for (int i = 0; i < 300; i++)
        kg_log_keyed(LOG_DEBUG, key, "http: aborted %d", i);
    for (int i = 0; i < 50; i++)
        log_info("node n%d discovered", i);
    char **lines = NULL;
    int n = log_ring_copy(KG_LOG_RING_LINES, &lines);
    cr_expect_eq(count_lines(lines, n, "http: aborted"), KG_LOG_BURST);
    cr_expect_eq(count_lines(lines, n, "discovered"), 50, "info lines are never suppressed");
    log_ring_free(lines, n);
}

Test(log, suppressed_lines_are_counted_and_summarised_when_the_window_ends, .init = quiet)
{
    log_set_rate_limit(3, 200);
    for (int i = 0; i < 10; i++)
        log_warn("repeated warning %d", i);
    log_warn("another call site"); /* its own budget */
    sleep_ms(250);
    log_flush_suppressed();
    char **lines = NULL;
    int n = log_ring_copy(KG_LOG_RING_LINES, &lines);
    cr_expect_eq(count_lines(lines, n, "repeated warning"), 4, "3 written + 1 summary");
    cr_expect_eq(count_lines(lines, n, "7 similar lines suppressed"), 1);
    cr_expect_eq(count_lines(lines, n, "the last: repeated warning 9"), 1);
    cr_expect_eq(count_lines(lines, n, "another call site"), 1);
    log_ring_free(lines, n);
    /* a new window has a new budget */
    log_warn("repeated again %d", 1);
    n = log_ring_copy(KG_LOG_RING_LINES, &lines);
    cr_expect_eq(count_lines(lines, n, "repeated again"), 1);
    log_ring_free(lines, n);
}

Test(log, many_call_sites_do_not_lose_their_summaries, .init = quiet)
{
    /* more distinct keys than the table holds: evicted windows are summarised, not lost */
    log_set_rate_limit(1, 60000);
    static const char keys[100];
    for (int k = 0; k < 100; k++)
        for (int i = 0; i < 3; i++)
            kg_log_keyed(LOG_WARN, &keys[k], "site %d line %d", k, i);
    char **lines = NULL;
    int n = log_ring_copy(KG_LOG_RING_LINES, &lines);
    cr_expect_eq(count_lines(lines, n, "line 0"), 100);
    cr_expect_geq(count_lines(lines, n, "similar lines suppressed"), 36,
                  "the slots evicted for new call sites were summarised");
    log_ring_free(lines, n);
}
