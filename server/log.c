/* log.c — stderr logging plus a ring of the last KG_LOG_RING_LINES lines for /api/debug-logs.
 *
 * Owns: the ring, the rate-limit table (see log.h) and their one mutex (a leaf lock).
 * Must not: format secrets (callers' duty) or allocate per line: the ring is a fixed array of
 * fixed-size lines and the rate-limit table a fixed array of slots. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
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

/* One call site's rate-limit window.  `key` is its format string (or the caller's key). */
typedef struct {
    const void *key;
    kg_log_level lvl;
    int64_t window_start_ms;
    int lines;              /* written in this window */
    long suppressed;        /* counted, not written, in this window */
    char last[160];         /* the last suppressed message, for the summary */
} rl_slot;

#define RL_SLOTS 64
static rl_slot rl[RL_SLOTS]; /* under ring_lock */
static int rl_burst = KG_LOG_BURST;
static int64_t rl_window_ms = KG_LOG_WINDOW_MS;

void log_set_rate_limit(int burst, int window_ms)
{
    pthread_mutex_lock(&ring_lock);
    rl_burst = burst > 0 ? burst : KG_LOG_BURST;
    rl_window_ms = window_ms > 0 ? window_ms : KG_LOG_WINDOW_MS;
    pthread_mutex_unlock(&ring_lock);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void format_line(char *line, size_t len, kg_log_level lvl, const char *fmt, va_list ap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int off = snprintf(line, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec, ts.tv_nsec / 1000000, level_names[lvl]);
    vsnprintf(line + off, len - (size_t)off, fmt, ap);
    /* one line per entry: newlines from callers' data must not forge extra log lines */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* Under ring_lock. */
static void emit_locked(const char *line)
{
    memcpy(ring[ring_next], line, LINE_MAX_LEN);
    ring[ring_next][LINE_MAX_LEN - 1] = '\0';
    ring_next = (ring_next + 1) % KG_LOG_RING_LINES;
    if (ring_count < KG_LOG_RING_LINES)
        ring_count++;
    fprintf(stderr, "%s\n", line);
}

static void emit_fmt_locked(kg_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void emit_fmt_locked(kg_log_level lvl, const char *fmt, ...)
{
    char line[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    format_line(line, sizeof line, lvl, fmt, ap);
    va_end(ap);
    emit_locked(line);
}

/* Under ring_lock: the summary of a window that ends, then a fresh window. */
static void close_window_locked(rl_slot *s, int64_t now)
{
    if (s->suppressed > 0)
        emit_fmt_locked(s->lvl, "(%ld similar lines suppressed in the last %lld s; the last: "
                        "%s)", s->suppressed, (long long)(now - s->window_start_ms + 999) / 1000,
                        s->last);
    s->window_start_ms = now;
    s->lines = 0;
    s->suppressed = 0;
}

static void flush_expired_locked(int64_t now)
{
    for (int i = 0; i < RL_SLOTS; i++)
        if (rl[i].key && rl[i].suppressed > 0 && now - rl[i].window_start_ms >= rl_window_ms)
            close_window_locked(&rl[i], now);
}

/* Under ring_lock: true when the line may be written now. */
static bool rate_allows_locked(const void *key, kg_log_level lvl, const char *msg, int64_t now)
{
    rl_slot *s = NULL, *oldest = &rl[0];
    for (int i = 0; i < RL_SLOTS && !s; i++) {
        if (rl[i].key == key)
            s = &rl[i];
        else if (!rl[i].key || (oldest->key && rl[i].window_start_ms < oldest->window_start_ms))
            oldest = &rl[i];
    }
    if (!s) { /* a new call site takes a free slot or the stalest one (summarised first) */
        s = oldest;
        if (s->key)
            close_window_locked(s, now);
        memset(s, 0, sizeof *s);
        s->key = key;
        s->window_start_ms = now;
    }
    s->lvl = lvl;
    if (now - s->window_start_ms >= rl_window_ms)
        close_window_locked(s, now);
    if (s->lines < rl_burst) {
        s->lines++;
        return true;
    }
    s->suppressed++;
    snprintf(s->last, sizeof s->last, "%s", msg);
    return false;
}

static void log_v(kg_log_level lvl, const void *key, const char *fmt, va_list ap)
{
    if (lvl > current_level)
        return;
    char line[LINE_MAX_LEN];
    format_line(line, sizeof line, lvl, fmt, ap);
    int64_t now = mono_ms();
    pthread_mutex_lock(&ring_lock);
    flush_expired_locked(now);
    /* the message without its timestamp and level, for a summary */
    const char *msg = line + strcspn(line, " ");
    msg += strspn(msg, " ");
    msg += strcspn(msg, " ");
    msg += strspn(msg, " ");
    if (!key || rate_allows_locked(key, lvl, msg, now))
        emit_locked(line);
    pthread_mutex_unlock(&ring_lock);
}

void kg_log(kg_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(lvl, lvl <= LOG_WARN ? (const void *)fmt : NULL, fmt, ap);
    va_end(ap);
}

void kg_log_keyed(kg_log_level lvl, const void *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(lvl, key ? key : (const void *)fmt, fmt, ap);
    va_end(ap);
}

void log_flush_suppressed(void)
{
    pthread_mutex_lock(&ring_lock);
    flush_expired_locked(mono_ms());
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
