/*
 * redis_url - the one parser of Redis URLs, for every Redis connection
 * sophiad makes (L2 cache, cluster, durable ingest, Redis Streams sources)
 * and for config checks, plus the form of a URL that may be logged.
 *
 *   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
 *
 * HOST is a name, an IPv4 address or a bracketed IPv6 address; PORT
 * defaults to 6379, DB to 0. USER and PASSWORD are percent-decoded
 * (`%40` for '@', `%3A` for ':', `%2F` for '/'). `:PASSWORD@` is AUTH
 * PASSWORD (requirepass); `USER:PASSWORD@` is AUTH USER PASSWORD (a
 * Redis 6+ ACL user). A userinfo without ':' is refused rather than
 * guessed at (some clients read it as a user, others as a password).
 *
 * Passwords never reach a log line, /api/stats or /metrics: whatever
 * shows a URL shows sophia_redis_url_redact()'s form,
 * redis://USER:***@HOST:PORT/DB.
 */
#ifndef SOPHIA_REDIS_URL_H
#define SOPHIA_REDIS_URL_H

#include <stddef.h>

typedef struct sophia_redis_url {
    char *host;     /* without brackets */
    int port;
    int db;
    char *user;     /* NULL: none (AUTH PASSWORD, or no AUTH) */
    char *password; /* NULL: no AUTH */
} sophia_redis_url;

/* 0, or -1 with a message (naming the part that is wrong, never the
 * password) in err. On success the strings in *out are malloc'd. */
int sophia_redis_url_parse(const char *url, sophia_redis_url *out, char *err,
                           size_t errlen);
void sophia_redis_url_clear(sophia_redis_url *u);

/* `url` with its password replaced by ***: the canonical
 * redis://[USER:***@]HOST:PORT/DB when it parses, otherwise the text with
 * everything before its last '@' masked. Returns buf. */
char *sophia_redis_url_redact(const char *url, char *buf, size_t n);

#endif
