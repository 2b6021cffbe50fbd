/*
 * ws_deflate - permessage-deflate (RFC 7692) for /ws clients that offer
 * it, when websocket.compression is `deflate` (SPEC §5, README "wire").
 *
 * lws negotiates the extension and inflates what clients send, but its
 * own compression runs per connection: a deflate stream each (~260 KiB
 * at the RFC's default window) and one deflate call per client per
 * message, 1,000 calls for a message 1,000 clients take. We write our
 * frames ourselves (LWS_WRITE_RAW, ws_client.c), so instead each message
 * is compressed once, by the router's one stream, reset before every
 * message, and the compressed frame (RSV1 set) is kept on the message as
 * its `z` twin and shared by every deflate client, as the msgpack twin
 * is (ws_history.h). That is valid whatever context takeover the client
 * asked for: a message that refers to nothing before it inflates the same
 * with or without the previous window, and the sync flush leaves the
 * peer's inflater on a block boundary. The price is the ratio: repeated
 * keys across messages are not shared, so small messages shrink less
 * than with per-connection contexts. A message that does not get smaller
 * goes as it is (a frame without RSV1 is allowed on a deflate
 * connection), remembered as such so it is tried once.
 */
#ifndef SOPHIA_WS_DEFLATE_H
#define SOPHIA_WS_DEFLATE_H

#include <stddef.h>

#include "lib/jsonw.h"
#include "ws/ws_history.h"

typedef struct ws_deflater ws_deflater;

/* NULL when out of memory. Holds one deflate stream (~260 KiB). */
ws_deflater *ws_deflater_new(void);
void ws_deflater_free(ws_deflater *d);
/* m's deflated twin, made now if it never was; m itself when it is
 * smaller than `min` bytes (websocket.compression_min: small messages
 * shrink little for a deflate each), or compressing does not make it
 * smaller (or there was no memory). Borrowed. */
ws_msg *ws_deflate_twin(ws_msg *m, ws_deflater *d, size_t pre, size_t min);

#endif
