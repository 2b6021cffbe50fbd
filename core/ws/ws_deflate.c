/*
 * ws_deflate - see ws_deflate.h.
 */
#include "ws/ws_deflate.h"

#include <stdlib.h>
#include <zlib.h>

#include "ws/ws_history.h"

struct ws_deflater {
    z_stream zs;
    unsigned char *out;
    size_t cap;
};

ws_deflater *ws_deflater_new(void)
{
    ws_deflater *d = calloc(1, sizeof(*d));
    /* Raw deflate (RFC 7692 has no zlib header), the full window the RFC
     * lets a server use unless the client asked otherwise, which lws
     * never accepts (it takes only argument-less options); level 6, the
     * zlib default, as JSON messages are small. */
    if (d && deflateInit2(&d->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8,
                          Z_DEFAULT_STRATEGY) != Z_OK) {
        free(d);
        return NULL;
    }
    return d;
}

void ws_deflater_free(ws_deflater *d)
{
    if (!d)
        return;
    deflateEnd(&d->zs);
    free(d->out);
    free(d);
}

/* The payload compressed on its own and sync-flushed, without the
 * 00 00 ff ff tail (RFC 7692 7.2.1); 0 when it failed. */
static size_t compress_one(ws_deflater *d, const unsigned char *in, size_t n)
{
    size_t bound = deflateBound(&d->zs, n) + 16;
    if (bound > d->cap) {
        unsigned char *o = realloc(d->out, bound);
        if (!o)
            return 0;
        d->out = o;
        d->cap = bound;
    }
    if (deflateReset(&d->zs) != Z_OK)
        return 0;
    d->zs.next_in = (unsigned char *)in;
    d->zs.avail_in = (uInt)n;
    d->zs.next_out = d->out;
    d->zs.avail_out = (uInt)d->cap;
    if (deflate(&d->zs, Z_SYNC_FLUSH) != Z_OK || d->zs.avail_in)
        return 0;
    size_t len = d->cap - d->zs.avail_out;
    return len >= 4 ? len - 4 : 0;
}

ws_msg *ws_deflate_twin(ws_msg *m, ws_deflater *d, size_t pre, size_t min)
{
    if (m->z || m->z_none || m->deflated)
        return m->z ? m->z : m;
    size_t n = m->len < min ? 0 : compress_one(d, m->buf + pre, m->len);
    if (!n || n >= m->len || !(m->z = ws_msg_new_deflated(m, d->out, n, pre))) {
        m->z_none = 1;
        return m;
    }
    return m->z;
}
