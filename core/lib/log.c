/*
 * log - see log.h. Lines are formatted into one buffer and written with a
 * single fwrite so concurrent writers (worker threads) never interleave
 * within a line.
 */
#include "lib/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static sophia_log_lvl log_level = SOPHIA_LVL_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sophia_log_set_level(sophia_log_lvl lvl)
{
    log_level = lvl;
}

sophia_log_lvl sophia_log_get_level(void)
{
    return log_level;
}

int sophia_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void sophia_logv(sophia_log_lvl lvl, const char *component, const char *fmt,
                 va_list ap)
{
    if (lvl < log_level || lvl > SOPHIA_LVL_ERROR)
        return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03dZ %s %s ",
                  (int)(tv.tv_usec / 1000), level_names[lvl], component);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    n = m < 0 ? n : n + m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr);
}

void sophia_log(sophia_log_lvl lvl, const char *component, const char *fmt,
                ...)
{
    va_list ap;
    va_start(ap, fmt);
    sophia_logv(lvl, component, fmt, ap);
    va_end(ap);
}

const char *sophia_log_quote(const char *s, char *buf, size_t len)
{
    if (!s)
        s = "";
    if (len == 0)
        return buf;
    if (*s && !strpbrk(s, " \"=\t\n")) {
        snprintf(buf, len, "%s", s);
        return buf;
    }
    size_t o = 0;
    buf[o++] = '"';
    for (; *s && o + 3 < len; s++) {
        if (*s == '"' || *s == '\\')
            buf[o++] = '\\';
        buf[o++] = *s == '\n' ? ' ' : *s;
    }
    buf[o++] = '"';
    buf[o < len ? o : len - 1] = '\0';
    return buf;
}
