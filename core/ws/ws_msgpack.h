/*
 * ws_msgpack - the binary subprotocol of /ws, `sophia.v1.msgpack` (SPEC
 * §5, README "WebSocket encodings"): the same messages as the JSON text
 * frames, map for object, array for array, str for string, int for an
 * integer, float64 for a real, true/false/nil, in binary frames; a
 * client that negotiated it may send its messages as msgpack binary
 * frames too (text frames stay JSON).
 *
 * Why msgpack rather than CBOR: both map JSON one to one, but Debian 12
 * ships msgpack-c 4 (libmsgpack-dev, C, packer and unpacker) while its
 * CBOR libraries are either a decoder-only tinycbor or libcbor 0.8 whose
 * item trees cost a malloc per value; msgpack's npm and Python packages
 * are also the ones client authors already have. The two are within a few
 * bytes of each other on our messages (same integer and string headers).
 *
 * Server messages are rendered once as JSON (ws.c, shared by every JSON
 * queue and the history ring); ws_msgpack_alt makes the msgpack copy of a
 * message the first time a msgpack client is sent it and keeps it on the
 * message (ws_history.h `alt`), so a publish is converted once however
 * many msgpack clients take it, and not at all when none does. The JSON
 * text is transcoded directly (two passes, no tree: a jansson parse was
 * most of the conversion's cost); jansson is only the fallback.
 *
 * Decoding is of untrusted input: the bytes are walked first (mp_check)
 * so that no container claims more elements than the message has bytes
 * (msgpack-c allocates a claimed count up front) and nesting stays within
 * SOPHIA_JSON_MAX_DEPTH; map keys must be strings, strings UTF-8, and
 * bin/ext values are refused, so what comes out is what JSON could say.
 */
#ifndef SOPHIA_WS_MSGPACK_H
#define SOPHIA_WS_MSGPACK_H

#include <jansson.h>
#include <stddef.h>

#include "lib/jsonw.h"
#include "ws/ws_history.h"

/* `v` as a binary-frame message with `pre` bytes of headroom; `scratch`
 * is a reusable buffer. NULL when out of memory. */
ws_msg *ws_msgpack_from_json(const json_t *v, sophia_jsonw *scratch, size_t pre);
/* JSON text (the server's own, well-formed) packed into `out` with the
 * same bytes ws_msgpack_from_json gives for its parse, without building
 * the tree; -1 when it is not such JSON (then parse it). */
int ws_msgpack_transcode(const char *text, size_t n, sophia_jsonw *out);
/* m's msgpack twin (m itself when already binary), made now if it never
 * was; borrowed: m holds the reference. NULL when out of memory. */
ws_msg *ws_msgpack_alt(ws_msg *m, sophia_jsonw *scratch, size_t pre);
/* One msgpack message as JSON; NULL with the reason in err when it is not
 * a single well-formed value JSON could hold. */
json_t *ws_msgpack_decode(const void *data, size_t len, char *err, size_t errn);

#endif
