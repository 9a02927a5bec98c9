/* log.h — logging to stderr plus an in-memory ring of the last lines (for /api/debug-logs).
 *
 * Owns: the ring and its mutex (a leaf lock: nothing else is locked while holding it).
 * Must not: be handed secrets — callers never log passwords, tokens or API keys. */
#ifndef KG_LOG_H
#define KG_LOG_H

#include <stddef.h>

typedef enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } kg_log_level;

#define KG_LOG_RING_LINES 1000

void log_set_level(kg_log_level lvl);
int log_parse_level(const char *s); /* -1 when unknown */
void kg_log(kg_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) kg_log(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) kg_log(LOG_WARN, __VA_ARGS__)
#define log_info(...) kg_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...) kg_log(LOG_DEBUG, __VA_ARGS__)

/* Copies the last `max_lines` lines (oldest first) into a malloc'd array of malloc'd strings.
 * Returns the count; free with log_ring_free. */
int log_ring_copy(int max_lines, char ***lines);
void log_ring_free(char **lines, int n);

#endif
