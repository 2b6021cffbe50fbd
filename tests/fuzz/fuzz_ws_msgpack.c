/*
 * fuzz_ws_msgpack - libFuzzer target for the sophia.v1.msgpack decoder
 * (ws_msgpack.h), which reads untrusted client frames: any bytes are
 * refused or decoded without crashing or allocating what they merely
 * claim, and what decodes packs back to bytes that decode to the same
 * value (round trip), which the JSON-to-msgpack transcoder also gives
 * from the value's JSON text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonw.h"
#include "ws/ws_history.h"
#include "ws/ws_msgpack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[128];
    json_t *v = ws_msgpack_decode(data, size, err, sizeof(err));
    if (!v)
        return 0;
    sophia_jsonw w = {0};
    ws_msg *m = ws_msgpack_from_json(v, &w, 16);
    json_t *again = m ? ws_msgpack_decode(m->buf + 16, m->len, err, sizeof(err)) : NULL;
    if (m && !json_equal(v, again))
        abort(); /* what decoded once must survive a round trip */
    /* its JSON text, plain and \u-escaped, transcodes to the same bytes */
    for (int ascii = 0; m && ascii < 2; ascii++) {
        sophia_jsonw t = {0};
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY |
                                       (ascii ? JSON_ENSURE_ASCII : 0));
        if (text && (ws_msgpack_transcode(text, strlen(text), &t) != 0 ||
                     t.len != m->len || memcmp(t.p, m->buf + 16, m->len) != 0))
            abort();
        free(text);
        sophia_jsonw_reset(&t);
    }
    json_decref(again);
    ws_msg_unref(m);
    sophia_jsonw_reset(&w);
    json_decref(v);
    return 0;
}
