/*
 * log - one logfmt line per event on stderr: `ts level component msg k=v...`.
 *
 * Callers pass a component ("http", "plugin", ...) and a printf message;
 * key=value pairs are part of the message, quoted by the caller when they
 * may contain spaces (sophia_log_quote helps). Lines below the configured
 * level are skipped before any formatting.
 */
#ifndef SOPHIA_LOG_H
#define SOPHIA_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum sophia_log_lvl {
    SOPHIA_LVL_DEBUG = 0,
    SOPHIA_LVL_INFO,
    SOPHIA_LVL_WARN,
    SOPHIA_LVL_ERROR
} sophia_log_lvl;

void sophia_log_set_level(sophia_log_lvl lvl);
sophia_log_lvl sophia_log_get_level(void);
/* "debug" | "info" | "warn" | "error" -> level; -1 when unknown. */
int sophia_log_parse_level(const char *s);

void sophia_log(sophia_log_lvl lvl, const char *component, const char *fmt,
                ...) __attribute__((format(printf, 3, 4)));
void sophia_logv(sophia_log_lvl lvl, const char *component, const char *fmt,
                 va_list ap);

#define sophia_debug(c, ...) sophia_log(SOPHIA_LVL_DEBUG, c, __VA_ARGS__)
#define sophia_info(c, ...) sophia_log(SOPHIA_LVL_INFO, c, __VA_ARGS__)
#define sophia_warn(c, ...) sophia_log(SOPHIA_LVL_WARN, c, __VA_ARGS__)
#define sophia_error(c, ...) sophia_log(SOPHIA_LVL_ERROR, c, __VA_ARGS__)

/* Writes `s` as a logfmt value into buf: bare when it has no space, quote
 * or '=', else double-quoted with escapes. Returns buf. */
const char *sophia_log_quote(const char *s, char *buf, size_t len);

#endif
