/*
 * ws_msgpack - see ws_msgpack.h.
 */
#include "ws/ws_msgpack.h"

#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "lib/jsonw.h"
#include "ws/ws_history.h"

/* msgpack-c's unpacker keeps its own stack of this many containers
 * (MSGPACK_EMBED_STACK_SIZE) and fails past it: we say so first. */
#define WS_MSGPACK_MAX_DEPTH 32

/* ------------------------------------------------------------- packing */

static int sink(void *data, const char *buf, size_t len)
{
    return sophia_jsonw_raw(data, buf, len) < 0 ? -1 : 0;
}

/* The server's own JSON (never deeper than what it rendered). */
static int pack(msgpack_packer *pk, const json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (msgpack_pack_map(pk, json_object_size(v)) < 0)
            return -1;
        json_object_foreach((json_t *)v, k, x) {
            size_t n = strlen(k);
            if (msgpack_pack_str(pk, n) < 0 || msgpack_pack_str_body(pk, k, n) < 0 ||
                pack(pk, x) < 0)
                return -1;
        }
        return 0;
    case JSON_ARRAY:
        if (msgpack_pack_array(pk, json_array_size(v)) < 0)
            return -1;
        json_array_foreach(v, i, x)
            if (pack(pk, x) < 0)
                return -1;
        return 0;
    case JSON_STRING:
        return msgpack_pack_str(pk, json_string_length(v)) < 0
                   ? -1
                   : msgpack_pack_str_body(pk, json_string_value(v),
                                           json_string_length(v));
    case JSON_INTEGER: /* the smallest int format that holds it */
        return msgpack_pack_int64(pk, json_integer_value(v));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    default:
        return msgpack_pack_nil(pk);
    }
}

ws_msg *ws_msgpack_from_json(const json_t *v, sophia_jsonw *scratch, size_t pre)
{
    msgpack_packer pk;
    sophia_jsonw_clear(scratch);
    msgpack_packer_init(&pk, scratch, sink);
    if (pack(&pk, v) < 0 || scratch->failed)
        return NULL;
    return ws_msg_new_binary(scratch->p, scratch->len, pre);
}

/* --------------------------------------------------------- transcoding
 *
 * JSON text straight to msgpack, without building a jansson tree (which
 * costs a malloc per value and was most of a conversion). msgpack writes
 * a container's size before its elements, so the text is walked twice:
 * once counting each container's elements (in the order containers
 * open), once packing. Only for the server's own JSON (well-formed): on
 * anything unexpected it gives up and the caller goes through jansson. */

#define TC_MAX_DEPTH 64

typedef struct tc {
    const char *p, *end;
    size_t *counts, ncap, next; /* elements per container, by opening order */
    msgpack_packer *pk;         /* NULL: the counting pass */
    char *sbuf;                 /* unescaped strings */
    size_t scap;
    int depth;
} tc;

static void tc_ws(tc *t)
{
    while (t->p < t->end &&
           (*t->p == ' ' || *t->p == '\n' || *t->p == '\t' || *t->p == '\r'))
        t->p++;
}

static int tc_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v |= (unsigned)((c | 0x20) - 'a' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t tc_utf8(unsigned cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The escaped string s[0..n) unescaped into t->sbuf; its length, or -1. */
static ssize_t tc_unescape(tc *t, const char *s, size_t n)
{
    if (n + 4 > t->scap) {
        char *b = realloc(t->sbuf, n + 4);
        if (!b)
            return -1;
        t->sbuf = b;
        t->scap = n + 4;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            t->sbuf[o++] = s[i];
            continue;
        }
        if (++i >= n)
            return -1;
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *k = strchr(from, s[i]);
        if (k && s[i]) {
            t->sbuf[o++] = to[k - from];
            continue;
        }
        unsigned cp, lo;
        if (s[i] != 'u' || i + 4 >= n + 0 || tc_hex4(s + i + 1, &cp) < 0)
            return -1;
        i += 4;
        if (cp >= 0xd800 && cp < 0xdc00) { /* a surrogate pair */
            if (i + 6 >= n || s[i + 1] != '\\' || s[i + 2] != 'u' ||
                tc_hex4(s + i + 3, &lo) < 0 || lo < 0xdc00 || lo >= 0xe000)
                return -1;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            i += 6;
        } else if (cp >= 0xdc00 && cp < 0xe000) {
            return -1;
        }
        o += tc_utf8(cp, t->sbuf + o); /* never longer than its escape */
    }
    return (ssize_t)o;
}

static int tc_string(tc *t)
{
    const char *s = ++t->p, *q = s;
    int esc = 0;
    while (q < t->end && *q != '"') {
        if (*q == '\\') {
            esc = 1;
            q++;
        }
        q++;
    }
    if (q >= t->end)
        return -1;
    t->p = q + 1;
    if (!t->pk)
        return 0;
    ssize_t n = esc ? tc_unescape(t, s, (size_t)(q - s)) : q - s;
    if (n < 0)
        return -1;
    return msgpack_pack_str(t->pk, (size_t)n) < 0 ||
                   msgpack_pack_str_body(t->pk, esc ? t->sbuf : s, (size_t)n) < 0
               ? -1
               : 0;
}

static int tc_number(tc *t)
{
    const char *s = t->p;
    int real = 0;
    while (t->p < t->end && strchr("+-0123456789.eE", *t->p) && *t->p) {
        real |= *t->p == '.' || *t->p == 'e' || *t->p == 'E';
        t->p++;
    }
    if (t->p == s || t->p - s > 63)
        return -1;
    if (!t->pk)
        return 0;
    char num[64], *e;
    memcpy(num, s, (size_t)(t->p - s));
    num[t->p - s] = '\0';
    errno = 0;
    if (real) {
        double d = strtod(num, &e); /* underflow (ERANGE) is fine, as in jansson */
        return *e || !isfinite(d) ? -1 : msgpack_pack_double(t->pk, d);
    }
    long long v = strtoll(num, &e, 10);
    return *e || errno ? -1 : msgpack_pack_int64(t->pk, v);
}

static int tc_literal(tc *t, const char *word, int (*pack)(msgpack_packer *))
{
    size_t n = strlen(word);
    if ((size_t)(t->end - t->p) < n || memcmp(t->p, word, n) != 0)
        return -1;
    t->p += n;
    return t->pk ? pack(t->pk) : 0;
}

static int tc_value(tc *t);

/* An object or array at t->p: its size counted, or its header packed. */
static int tc_container(tc *t, int object)
{
    size_t k = t->next++;
    char close = object ? '}' : ']';
    if (!t->pk) {
        if (k == t->ncap) {
            size_t cap = t->ncap ? t->ncap * 2 : 64;
            size_t *c = realloc(t->counts, cap * sizeof(*c));
            if (!c)
                return -1;
            t->counts = c;
            t->ncap = cap;
        }
        t->counts[k] = 0;
    } else if ((object ? msgpack_pack_map(t->pk, t->counts[k])
                       : msgpack_pack_array(t->pk, t->counts[k])) < 0) {
        return -1;
    }
    if (++t->depth > TC_MAX_DEPTH)
        return -1;
    t->p++;
    tc_ws(t);
    if (t->p < t->end && *t->p == close) {
        t->p++;
        t->depth--;
        return 0;
    }
    for (;;) {
        tc_ws(t);
        if (object) {
            if (t->p >= t->end || *t->p != '"' || tc_string(t) < 0)
                return -1;
            tc_ws(t);
            if (t->p >= t->end || *t->p++ != ':')
                return -1;
        }
        if (tc_value(t) < 0)
            return -1;
        if (!t->pk)
            t->counts[k]++;
        tc_ws(t);
        if (t->p < t->end && *t->p == ',') {
            t->p++;
            continue;
        }
        if (t->p < t->end && *t->p == close) {
            t->p++;
            t->depth--;
            return 0;
        }
        return -1;
    }
}

static int tc_value(tc *t)
{
    tc_ws(t);
    if (t->p >= t->end)
        return -1;
    switch (*t->p) {
    case '{':
        return tc_container(t, 1);
    case '[':
        return tc_container(t, 0);
    case '"':
        return tc_string(t);
    case 't':
        return tc_literal(t, "true", msgpack_pack_true);
    case 'f':
        return tc_literal(t, "false", msgpack_pack_false);
    case 'n':
        return tc_literal(t, "null", msgpack_pack_nil);
    default:
        return tc_number(t);
    }
}

/* One walk over text[0..n): counting when pk is NULL, else packing. */
static int tc_pass(tc *t, const char *text, size_t n, msgpack_packer *pk)
{
    t->p = text;
    t->end = text + n;
    t->next = 0;
    t->depth = 0;
    t->pk = pk;
    if (tc_value(t) < 0)
        return -1;
    tc_ws(t);
    return t->p == t->end ? 0 : -1;
}

int ws_msgpack_transcode(const char *text, size_t n, sophia_jsonw *out)
{
    tc t = {0};
    msgpack_packer pk;
    sophia_jsonw_clear(out);
    msgpack_packer_init(&pk, out, sink);
    int rc = tc_pass(&t, text, n, NULL) < 0 || tc_pass(&t, text, n, &pk) < 0 ||
                     out->failed
                 ? -1
                 : 0;
    free(t.counts);
    free(t.sbuf);
    return rc;
}

/* The jansson way, for what the transcoder gave up on. */
static ws_msg *alt_via_tree(const ws_msg *m, sophia_jsonw *scratch, size_t pre)
{
    json_t *v = json_loadb(ws_msg_text(m, pre), m->len, JSON_ALLOW_NUL, NULL);
    ws_msg *b = v ? ws_msgpack_from_json(v, scratch, pre) : NULL;
    json_decref(v);
    return b;
}

ws_msg *ws_msgpack_alt(ws_msg *m, sophia_jsonw *scratch, size_t pre)
{
    if (m->binary || m->alt)
        return m->binary ? m : m->alt;
    ws_msg *b = ws_msgpack_transcode(ws_msg_text(m, pre), m->len, scratch) == 0
                    ? ws_msg_new_binary(scratch->p, scratch->len, pre)
                    : alt_via_tree(m, scratch, pre);
    if (!b)
        return NULL;
    b->pubid = m->pubid;
    if (m->ckey && (b->ckey = malloc(m->ckey_len + 1))) {
        memcpy(b->ckey, m->ckey, m->ckey_len + 1);
        b->ckey_len = m->ckey_len;
    }
    if (m->ckey && !b->ckey) { /* coalescing needs it: all or nothing */
        ws_msg_unref(b);
        return NULL;
    }
    m->alt = b;
    return b;
}

/* ------------------------------------------------------------ decoding */

static uint64_t be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The next n bytes of p[0..len) from *o, or NULL when there are fewer. */
static const unsigned char *take(const unsigned char *p, size_t len, size_t *o,
                                 uint64_t n)
{
    if (n > len - *o)
        return NULL;
    *o += (size_t)n;
    return p + *o - n;
}

/* Walks one value: 0, or -1 with *why. Containers are checked against
 * the bytes left (every element takes at least one) before msgpack-c
 * allocates their claimed size. */
static int mp_check(const unsigned char *p, size_t len, size_t *o, int depth,
                    const char **why)
{
    static const unsigned char fixed[0x20] = {
        /* 0xc0..0xdf: bytes after the marker; 0xff = not accepted */
        0, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 4, 8, 1, 2, 4, 8,
        1, 2, 4, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0};
    const unsigned char *h = take(p, len, o, 1);
    uint64_t items = 0, skip = 0;
    if (!h)
        goto truncated;
    unsigned b = *h;
    if (b <= 0x7f || b >= 0xe0)
        return 0;
    if ((b & 0xe0) == 0xa0) {
        skip = b & 0x1f;
    } else if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        items = (uint64_t)(b & 0x0f) * ((b & 0xf0) == 0x80 ? 2 : 1);
    } else if (b >= 0xd9) { /* str8/16/32, array16/32, map16/32 */
        static const unsigned char w[7] = {1, 2, 4, 2, 4, 2, 4};
        size_t n = w[b - 0xd9];
        if (!(h = take(p, len, o, n)))
            goto truncated;
        uint64_t v = be(h, n);
        if (b <= 0xdb)
            skip = v;
        else
            items = b >= 0xde ? 2 * v : v;
    } else if (fixed[b - 0xc0] == 0xff) {
        *why = "bin and ext values (and 0xc1) are not accepted";
        return -1;
    } else {
        skip = fixed[b - 0xc0];
    }
    if (skip && !take(p, len, o, skip))
        goto truncated;
    if (items && depth >= WS_MSGPACK_MAX_DEPTH) {
        *why = "nested deeper than 32 levels";
        return -1;
    }
    if (items > len - *o)
        goto truncated;
    for (uint64_t i = 0; i < items; i++)
        if (mp_check(p, len, o, depth + 1, why) < 0)
            return -1;
    return 0;
truncated:
    *why = "truncated (a length or count runs past the end)";
    return -1;
}

static json_t *to_json(const msgpack_object *o, const char **why);

static json_t *map_to_json(const msgpack_object_map *m, const char **why)
{
    json_t *obj = json_object();
    char key[256];
    for (uint32_t i = 0; obj && i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof(key) ||
            (k->via.str.size && memchr(k->via.str.ptr, 0, k->via.str.size))) {
            *why = "map keys must be strings of at most 255 bytes";
            goto fail;
        }
        if (k->via.str.size)
            memcpy(key, k->via.str.ptr, k->via.str.size);
        key[k->via.str.size] = '\0';
        json_t *v = to_json(&m->ptr[i].val, why);
        if (!v || json_object_set_new(obj, key, v) < 0) {
            if (v)
                *why = "map keys must be UTF-8";
            goto fail;
        }
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

static json_t *to_json(const msgpack_object *o, const char **why)
{
    json_t *v = NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            break;
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!(v = json_real(o->via.f64)))
            *why = "floats must be finite";
        return v;
    case MSGPACK_OBJECT_STR:
        /* msgpack-c may leave ptr NULL for an empty string */
        if (!(v = json_stringn(o->via.str.size ? o->via.str.ptr : "",
                               o->via.str.size)))
            *why = "strings must be UTF-8";
        return v;
    case MSGPACK_OBJECT_ARRAY:
        v = json_array();
        for (uint32_t i = 0; v && i < o->via.array.size; i++) {
            json_t *x = to_json(&o->via.array.ptr[i], why);
            if (!x || json_array_append_new(v, x) < 0) {
                json_decref(v);
                return NULL;
            }
        }
        return v;
    case MSGPACK_OBJECT_MAP:
        return map_to_json(&o->via.map, why);
    default:
        *why = "bin and ext values are not accepted";
        return NULL;
    }
    *why = "integers must fit in 64 signed bits";
    return NULL;
}

json_t *ws_msgpack_decode(const void *data, size_t len, char *err, size_t errn)
{
    const char *why = "not a msgpack value";
    size_t o = 0, off = 0;
    json_t *v = NULL;
    int ok = mp_check(data, len, &o, 0, &why) == 0;
    if (ok && o != len)
        why = "more than one value in the message";
    else if (ok) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS)
            v = to_json(&u.data, &why);
        else
            why = "msgpack-c could not unpack it";
        msgpack_unpacked_destroy(&u);
    }
    if (!v && err && errn)
        snprintf(err, errn, "%s", why);
    return v;
}
