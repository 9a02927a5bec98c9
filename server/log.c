/* log.c — stderr logging plus a ring of the last KG_LOG_RING_LINES lines for /api/debug-logs.
 *
 * Owns: the ring and its mutex (a leaf lock).  Must not: format secrets (callers' duty) or
 * allocate per line: the ring is a fixed array of fixed-size lines. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LINE_MAX_LEN 512

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static char ring[KG_LOG_RING_LINES][LINE_MAX_LEN];
static int ring_next;   /* slot the next line goes to */
static int ring_count;
static kg_log_level current_level = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(kg_log_level lvl) { current_level = lvl; }

int log_parse_level(const char *s)
{
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void kg_log(kg_log_level lvl, const char *fmt, ...)
{
    if (lvl > current_level)
        return;
    char line[LINE_MAX_LEN];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int off = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec, ts.tv_nsec / 1000000, level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap);
    va_end(ap);
    /* one line per entry: newlines from callers' data must not forge extra log lines */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    pthread_mutex_lock(&ring_lock);
    memcpy(ring[ring_next], line, sizeof line);
    ring_next = (ring_next + 1) % KG_LOG_RING_LINES;
    if (ring_count < KG_LOG_RING_LINES)
        ring_count++;
    fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&ring_lock);
}

int log_ring_copy(int max_lines, char ***lines)
{
    *lines = NULL;
    if (max_lines <= 0)
        return 0;
    pthread_mutex_lock(&ring_lock);
    int n = ring_count < max_lines ? ring_count : max_lines;
    char **out = calloc((size_t)n + 1, sizeof *out);
    int got = 0;
    if (out) {
        int start = (ring_next - n + KG_LOG_RING_LINES) % KG_LOG_RING_LINES;
        for (; got < n; got++) {
            out[got] = strdup(ring[(start + got) % KG_LOG_RING_LINES]);
            if (!out[got])
                break;
        }
    }
    pthread_mutex_unlock(&ring_lock);
    *lines = out;
    return got;
}

void log_ring_free(char **lines, int n)
{
    if (!lines)
        return;
    for (int i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}
