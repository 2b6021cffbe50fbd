/*
 * http_parse - see http_parse.h.
 *
 * The head is walked line by line once. Lines must end in CRLF; the
 * request line is `method SP target SP HTTP/1.x`; a header is
 * `token ":" OWS value OWS`. Then the few headers that decide framing and
 * the connection's fate (Content-Length, Transfer-Encoding, Connection,
 * Upgrade, Host, Expect) are interpreted, each at most once.
 */
#include "http/http_parse.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 §5.6.2 tchar. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Field value bytes: VCHAR, obs-text, SP and HTAB. */
static int is_vchar(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int fail(char *err, size_t errlen, int status, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return status;
}

/* The next line of buf[*at..len), NUL-terminated in place (CR LF
 * replaced); NULL at a bare LF or when no CRLF is left. */
static char *next_line(char *buf, size_t len, size_t *at, size_t *line_len)
{
    size_t s = *at;
    char *lf = memchr(buf + s, '\n', len - s);
    if (!lf || lf == buf + s || lf[-1] != '\r')
        return NULL;
    size_t e = (size_t)(lf - buf) - 1; /* the CR */
    buf[e] = '\0';
    *line_len = e - s;
    *at = (size_t)(lf - buf) + 1;
    return buf + s;
}

static const struct {
    const char *name;
    sophia_http_method m;
} methods[] = {{"GET", SOPHIA_HTTP_GET},       {"POST", SOPHIA_HTTP_POST},
               {"PUT", SOPHIA_HTTP_PUT},       {"DELETE", SOPHIA_HTTP_DELETE},
               {"HEAD", SOPHIA_HTTP_HEAD},     {"PATCH", SOPHIA_HTTP_PATCH},
               {"OPTIONS", SOPHIA_HTTP_OPTIONS}};

static int parse_request_line(char *line, size_t n, sophia_http_head *h,
                              char *err, size_t errlen)
{
    char *sp1 = memchr(line, ' ', n);
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1)
        return fail(err, errlen, 400, "malformed request line");
    *sp1 = *sp2 = '\0';
    for (char *p = line; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return fail(err, errlen, 400, "malformed method");
    h->method_name = line;
    h->method = SOPHIA_HTTP_OTHER;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(line, methods[i].name) == 0)
            h->method = methods[i].m;
    h->target = sp1 + 1;
    if (strlen(h->target) > SOPHIA_HTTP_MAX_TARGET)
        return fail(err, errlen, 414, "request target longer than 8192 bytes");
    for (char *p = h->target; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            return fail(err, errlen, 400, "control byte or space in request target");
    const char *v = sp2 + 1;
    if (strncmp(v, "HTTP/", 5) != 0 || strlen(v) != 8 || v[6] != '.' ||
        v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return fail(err, errlen, 400, "malformed HTTP version");
    if (v[5] != '1')
        return fail(err, errlen, 505, "only HTTP/1.0 and HTTP/1.1 are served");
    h->minor = v[7] - '0';
    return 0;
}

/* absolute-form (http://host/path): the authority stands in for Host. */
static int split_absolute(sophia_http_head *h, char *err, size_t errlen)
{
    char *t = h->target;
    size_t skip = strncasecmp(t, "http://", 7) == 0    ? 7
                  : strncasecmp(t, "https://", 8) == 0 ? 8
                                                       : 0;
    if (!skip) {
        if (t[0] == '/' || (t[0] == '*' && !t[1] && h->method == SOPHIA_HTTP_OPTIONS))
            return 0;
        return fail(err, errlen, 400, "request target must start with /");
    }
    char *slash = strchr(t + skip, '/');
    if (!slash || slash == t + skip)
        return fail(err, errlen, 400, "absolute request target without a path");
    /* Shift the authority left by one so it can be NUL-terminated while
     * the path keeps its leading slash in place. */
    size_t alen = (size_t)(slash - (t + skip));
    memmove(t, t + skip, alen);
    t[alen] = '\0';
    h->authority = t;
    h->target = slash;
    return 0;
}

static int parse_header(char *line, sophia_http_head *h, char *err,
                        size_t errlen)
{
    if (line[0] == ' ' || line[0] == '\t')
        return fail(err, errlen, 400, "folded header line (obs-fold)");
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return fail(err, errlen, 400, "header line without a name and colon");
    for (char *p = line; p < colon; p++) {
        if (!is_tchar((unsigned char)*p))
            return fail(err, errlen, 400,
                        "bad byte in a header name (or whitespace before its colon)");
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    char *e = v + strlen(v);
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *e = '\0';
    for (char *p = v; p < e; p++)
        if (!is_vchar((unsigned char)*p))
            return fail(err, errlen, 400, "control byte in a header value");
    if (h->nheaders == SOPHIA_HTTP_MAX_HEADERS)
        return fail(err, errlen, 431, "more than 64 header fields");
    h->headers[h->nheaders].name = line;
    h->headers[h->nheaders].value = v;
    h->nheaders++;
    return 0;
}

const char *sophia_http_head_get(const sophia_http_head *h, const char *name)
{
    for (size_t i = 0; i < h->nheaders; i++)
        if (strcmp(h->headers[i].name, name) == 0)
            return h->headers[i].value;
    return NULL;
}

static size_t count_header(const sophia_http_head *h, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < h->nheaders; i++)
        n += strcmp(h->headers[i].name, name) == 0;
    return n;
}

/* Whether the comma-separated list `v` holds `token` (case-insensitive). */
static int list_has(const char *v, const char *token)
{
    size_t tl = strlen(token);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        size_t n = strcspn(v, ",");
        size_t m = n;
        while (m && (v[m - 1] == ' ' || v[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(v, token, tl) == 0)
            return 1;
        v += n;
    }
    return 0;
}

static int parse_length(sophia_http_head *h, char *err, size_t errlen)
{
    size_t ncl = count_header(h, "content-length");
    size_t nte = count_header(h, "transfer-encoding");
    h->content_length = -1;
    if (ncl > 1)
        return fail(err, errlen, 400, "more than one Content-Length header");
    if (ncl && nte)
        return fail(err, errlen, 400,
                    "both Content-Length and Transfer-Encoding (request smuggling shape)");
    if (nte > 1)
        return fail(err, errlen, 400, "more than one Transfer-Encoding header");
    if (nte) {
        if (strcasecmp(sophia_http_head_get(h, "transfer-encoding"), "chunked") != 0)
            return fail(err, errlen, 501, "only the chunked transfer coding is supported");
        if (h->minor == 0)
            return fail(err, errlen, 400, "Transfer-Encoding in an HTTP/1.0 request");
        h->chunked = 1;
        return 0;
    }
    if (!ncl)
        return 0;
    const char *v = sophia_http_head_get(h, "content-length");
    size_t n = strlen(v);
    if (n == 0 || n > 18 || strspn(v, "0123456789") != n)
        return fail(err, errlen, 400, "Content-Length is not a plain decimal number");
    int64_t cl = 0;
    for (size_t i = 0; i < n; i++)
        cl = cl * 10 + (v[i] - '0');
    h->content_length = cl;
    return 0;
}

static int parse_semantics(sophia_http_head *h, char *err, size_t errlen)
{
    int st = parse_length(h, err, errlen);
    if (st)
        return st;
    size_t nhost = count_header(h, "host");
    if (nhost > 1)
        return fail(err, errlen, 400, "more than one Host header");
    if (!nhost && h->minor == 1)
        return fail(err, errlen, 400, "HTTP/1.1 request without a Host header");
    const char *conn = sophia_http_head_get(h, "connection");
    h->keep_alive = h->minor == 1 ? !list_has(conn, "close")
                                  : list_has(conn, "keep-alive");
    h->upgrade_ws = list_has(conn, "upgrade") &&
                    list_has(sophia_http_head_get(h, "upgrade"), "websocket");
    const char *expect = sophia_http_head_get(h, "expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0)
            return fail(err, errlen, 417, "only Expect: 100-continue is understood");
        h->expect_continue = h->minor == 1;
    }
    return 0;
}

int sophia_http_head_parse(char *buf, size_t len, sophia_http_head *h,
                           char *err, size_t errlen)
{
    memset(h, 0, sizeof(*h));
    size_t at = 0, n;
    /* RFC 9112 §2.2: empty lines before a request line are ignored (a
     * client may send a CRLF after a POST body). */
    while (at + 1 < len && buf[at] == '\r' && buf[at + 1] == '\n')
        at += 2;
    char *line = next_line(buf, len, &at, &n);
    if (!line)
        return fail(err, errlen, 400, "request line does not end in CRLF");
    int st = parse_request_line(line, n, h, err, errlen);
    if (st || (st = split_absolute(h, err, errlen)))
        return st;
    for (;;) {
        line = next_line(buf, len, &at, &n);
        if (!line)
            return fail(err, errlen, 400, "header line does not end in CRLF");
        if (n == 0)
            break;
        if ((st = parse_header(line, h, err, errlen)))
            return st;
    }
    return parse_semantics(h, err, errlen);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int sophia_http_pct_decode(char *s, size_t *len, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < *len; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < *len ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)s[i + 2]) : -1;
            if (lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == '\0')
            return -1;
        s[o++] = c;
    }
    s[o] = '\0';
    *len = o;
    return 0;
}

/* ------------------------------------------------------------ chunked */

enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF,
       CH_TRAILER, CH_TRAILER_LF, CH_DONE };

#define CH_MAX_LINE 1024
#define CH_MAX_TRAILER 8192

/* One byte of the framing (everything but data). 1 done, 0 go on, -1 bad. */
static int chunk_byte(sophia_http_chunked *c, char b)
{
    int d;
    switch (c->state) {
    case CH_SIZE:
        if ((d = hexval((unsigned char)b)) >= 0) {
            if (c->remain >> 56 || ++c->line > 16)
                return -1; /* a chunk larger than anything we accept */
            c->remain = c->remain * 16 + (uint64_t)d;
            return 0;
        }
        if (c->line == 0)
            return -1;
        if (b == ';' || b == ' ' || b == '\t') {
            c->state = CH_EXT;
            return 0;
        }
        if (b != '\r')
            return -1;
        c->state = CH_SIZE_LF;
        return 0;
    case CH_EXT: /* chunk extensions are ignored, but bounded */
        if (b == '\r')
            c->state = CH_SIZE_LF;
        else if (b == '\n' || ++c->line > CH_MAX_LINE)
            return -1;
        return 0;
    case CH_SIZE_LF:
        if (b != '\n')
            return -1;
        c->line = 0;
        c->state = c->remain ? CH_DATA : CH_TRAILER;
        return 0;
    case CH_DATA_CR:
        if (b != '\r')
            return -1;
        c->state = CH_DATA_LF;
        return 0;
    case CH_DATA_LF:
        if (b != '\n')
            return -1;
        c->state = CH_SIZE;
        return 0;
    case CH_TRAILER:
        if (b == '\r') {
            c->state = CH_TRAILER_LF;
            return 0;
        }
        c->line++;
        return b == '\n' || ++c->trailer > CH_MAX_TRAILER ? -1 : 0;
    case CH_TRAILER_LF:
        if (b != '\n')
            return -1;
        if (c->line == 0) {
            c->state = CH_DONE;
            return 1;
        }
        c->line = 0;
        c->state = CH_TRAILER;
        return 0;
    default:
        return -1;
    }
}

int sophia_http_chunked_feed(sophia_http_chunked *c, const char *in,
                             size_t len, size_t *used, char *out,
                             size_t *out_len)
{
    size_t i = 0;
    int rc = 0;
    while (i < len && rc == 0) {
        if (c->state == CH_DATA) {
            size_t n = len - i < c->remain ? len - i : (size_t)c->remain;
            memcpy(out + *out_len, in + i, n);
            *out_len += n;
            c->remain -= n;
            i += n;
            if (!c->remain)
                c->state = CH_DATA_CR;
            continue;
        }
        rc = chunk_byte(c, in[i++]);
    }
    *used = i;
    return rc;
}
