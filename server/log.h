/* log.h — logging to stderr plus an in-memory ring of the last lines (for /api/debug-logs).
 *
 * Repeated lines are rate-limited so one flood (a client aborting thousands of connections,
 * a node row rejected on every refresh) cannot push everything else out of the ring: per call
 * site (the format string) at most KG_LOG_BURST lines per KG_LOG_WINDOW_MS are written, the
 * rest are counted and summarised in one line when the window ends ("... N similar lines
 * suppressed ...").  That applies to warnings and errors, and to any line logged with
 * kg_log_keyed(); info and debug lines through kg_log() are not limited (a failover of many
 * nodes legitimately logs many).
 *
 * Owns: the ring, the rate-limit table and their mutex (a leaf lock: nothing else is locked
 * while holding it).
 * Must not: be handed secrets — callers never log passwords, tokens or API keys. */
#ifndef KG_LOG_H
#define KG_LOG_H

#include <stddef.h>

typedef enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } kg_log_level;

#define KG_LOG_RING_LINES 1000
#define KG_LOG_BURST 20          /* lines per call site and window */
#define KG_LOG_WINDOW_MS 60000

void log_set_level(kg_log_level lvl);
int log_parse_level(const char *s); /* -1 when unknown */
void kg_log(kg_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Rate-limited whatever the level, counted under `key` (any stable pointer, e.g. the format
 * string of a library's own message). */
void kg_log_keyed(kg_log_level lvl, const void *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Burst and window of the rate limit (defaults KG_LOG_BURST, KG_LOG_WINDOW_MS); for tests. */
void log_set_rate_limit(int burst, int window_ms);
/* Writes the summaries of windows that have ended (also done on every log call). */
void log_flush_suppressed(void);
#define log_error(...) kg_log(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) kg_log(LOG_WARN, __VA_ARGS__)
#define log_info(...) kg_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...) kg_log(LOG_DEBUG, __VA_ARGS__)

/* Copies the last `max_lines` lines (oldest first) into a malloc'd array of malloc'd strings.
 * Returns the count; free with log_ring_free. */
int log_ring_copy(int max_lines, char ***lines);
void log_ring_free(char **lines, int n);

#endif
