/* test_events.c — the local event history (events.h).  Issue 13 (static analysis): the
 * history query ignored the result of sqlite3_step, so a query that failed part-way returned a
 * short page as if it were the end of the history. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "events.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/kg-events-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char err[256];
    cr_assert_eq(events_open(dir, err, sizeof err), 0, "%s", err);
}

static void teardown(void)
{
    events_close();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

static void append_many(int n)
{
    for (int i = 0; i < n; i++) {
        kg_event ev = {.ts_ms = 1795701600000LL + i, .kind = EV_FAILOVER, .count = i};
        snprintf(ev.node, sizeof ev.node, "node%d", i % 7);
        snprintf(ev.reason, sizeof ev.reason, "event %d: %0120d", i, i);
        cr_assert_eq(events_append(&ev), 0);
    }
}

TestSuite(events, .init = setup, .fini = teardown);

Test(events, a_full_query_pages_newest_first)
{
    append_many(50);
    events_query q = {.kind = -1, .limit = 20};
    kg_event *ev = NULL;
    int n = 0;
    char err[256] = "";
    cr_assert_eq(events_query_run(&q, &ev, &n, err, sizeof err), 0, "%s", err);
    cr_expect_eq(n, 20);
    cr_expect_eq(ev[0].id, 50);
    cr_expect_eq(ev[19].id, 31);
    free(ev);
}

Test(events, a_query_that_fails_part_way_is_an_error_not_a_short_page)
{
    append_many(3000);
    events_close(); /* everything is in state.db now */
    char path[128];
    snprintf(path, sizeof path, "%s/state.db", dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    /* overwrite pages in the part of the file the newest events live in */
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    char junk[4096];
    memset(junk, 0xff, sizeof junk);
    for (off_t off = (st.st_size * 70 / 100) & ~(off_t)4095; off < st.st_size * 95 / 100;
         off += 4096)
        cr_assert_eq(pwrite(fd, junk, sizeof junk, off), (ssize_t)sizeof junk);
    close(fd);

    events_query q = {.kind = -1, .limit = 1000};
    kg_event *ev = NULL;
    int n = -1;
    char err[256] = "";
    int rc = events_query_run(&q, &ev, &n, err, sizeof err);
    cr_expect_eq(rc, -1, "a failing query returned %d events as a complete page", n);
    cr_expect(strstr(err, "history") != NULL, "error says what failed: %s", err);
    free(ev);
}
