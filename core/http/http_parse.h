/*
 * http_parse - the HTTP/1.1 request head and chunked body, read strictly.
 *
 * Pure functions over bytes, no I/O: http.c feeds them what it read, the
 * unit tests and fuzz_http feed them anything. Strict on the shapes that
 * let two parsers disagree about where a request ends (RFC 9112 §6.3,
 * §11.2): a duplicate Content-Length, Content-Length together with
 * Transfer-Encoding, a length that is not plain digits, a transfer coding
 * other than chunked, whitespace before a header's colon, folded header
 * lines and bare LF line ends are all refused with 400 (or 501), never
 * guessed at. Everything is parsed in place: names and values are
 * NUL-terminated inside the caller's buffer.
 */
#ifndef SOPHIA_HTTP_PARSE_H
#define SOPHIA_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define SOPHIA_HTTP_MAX_HEADERS 64
#define SOPHIA_HTTP_MAX_TARGET 8192

typedef enum sophia_http_method {
    SOPHIA_HTTP_OTHER = 0,
    SOPHIA_HTTP_GET,
    SOPHIA_HTTP_POST,
    SOPHIA_HTTP_PUT,
    SOPHIA_HTTP_DELETE,
    SOPHIA_HTTP_HEAD,
    SOPHIA_HTTP_PATCH,
    SOPHIA_HTTP_OPTIONS
} sophia_http_method;

typedef struct sophia_http_header {
    const char *name; /* lower-case */
    const char *value; /* without surrounding whitespace */
} sophia_http_header;

typedef struct sophia_http_head {
    sophia_http_method method;
    const char *method_name;
    char *target;          /* as sent: origin-form path?query */
    const char *authority; /* absolute-form's host[:port], else NULL */
    int minor;             /* HTTP/1.<minor> */
    sophia_http_header headers[SOPHIA_HTTP_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length; /* -1: none sent */
    int chunked;
    int keep_alive;
    int upgrade_ws;         /* Connection: upgrade + Upgrade: websocket */
    int expect_continue;
} sophia_http_head;

/* Parses buf[0..len), which holds a whole head ending with CRLF CRLF.
 * Returns 0, or the status to answer (400, 414, 417, 431, 501, 505) with
 * a message for the client in `err`. Writes NULs into buf. */
int sophia_http_head_parse(char *buf, size_t len, sophia_http_head *h,
                           char *err, size_t errlen);

/* The value of header `name` (lower-case), or NULL. */
const char *sophia_http_head_get(const sophia_http_head *h, const char *name);

/* Decodes %XX escapes of s[0..*len) in place (and '+' as a space when
 * plus_is_space, for query strings) and NUL-terminates. -1 on a bad
 * escape or a decoded NUL byte. */
int sophia_http_pct_decode(char *s, size_t *len, int plus_is_space);

/* Chunked transfer coding (RFC 9112 §7.1), fed in pieces. */
typedef struct sophia_http_chunked {
    int state;
    uint64_t remain; /* data bytes left in this chunk */
    size_t line;     /* bytes of the current size or trailer line */
    size_t trailer;  /* trailer bytes so far */
} sophia_http_chunked;

/* Consumes in[0..len): data bytes are copied to out (out_len grows; the
 * caller makes room for len more bytes). Sets *used to the bytes consumed.
 * Returns 1 after the last chunk and its trailer, 0 when it needs more
 * input, -1 on malformed input. */
int sophia_http_chunked_feed(sophia_http_chunked *c, const char *in,
                             size_t len, size_t *used, char *out,
                             size_t *out_len);

#endif
