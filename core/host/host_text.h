/*
 * host_text - checks JSON text a plugin hands over as text (SDK 1.4's
 * publish_text and cache_put_text), so what reaches a WebSocket client or
 * a cache tier is one well-formed JSON value even when the plugin's
 * writer is wrong: RFC 8259's grammar, UTF-8 that decodes (a browser
 * closes the connection on a text frame that does not), no escaped NUL and
 * no lone surrogate (jansson, which reads the value back elsewhere,
 * refuses both), nesting at most SOPHIA_JSON_MAX_DEPTH. One pass, no
 * allocation: it is what lets the host skip building and encoding a
 * tree, so it must cost much less than parsing.
 */
#ifndef SOPHIA_HOST_TEXT_H
#define SOPHIA_HOST_TEXT_H

#include <stddef.h>

/* Where a top-level member's string value sits in the text. */
typedef struct host_text_member {
    const char *key; /* the member looked for (NULL: none) */
    const char *at;  /* its string's bytes between the quotes, or NULL */
    size_t len;
    int escaped;     /* its value or some top-level key has a backslash:
                      * `at` is not the decoded string (ask jansson) */
} host_text_member;

/* 0 when s[0..len) is one JSON value, surrounded by whitespace at most;
 * else -1. When m->key is set and the value is an object, m says where
 * the last top-level member of that name has its string value. */
int host_text_check(const char *s, size_t len, host_text_member *m);

/* What a text given to host_text_check_padded has after it: s[len] is
 * NUL and so are the HOST_TEXT_PAD - 1 bytes after it. */
#define HOST_TEXT_PAD 16

/* host_text_check of a copy the host made with HOST_TEXT_PAD after it:
 * the same answer, the same m. The compact texts writers produce (no
 * whitespace, no escapes) are read in one loop that needs no bound, the
 * rest by host_text_check. */
int host_text_check_padded(const char *s, size_t len, host_text_member *m);

#endif
