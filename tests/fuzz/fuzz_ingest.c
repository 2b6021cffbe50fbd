/*
 * fuzz_ingest - libFuzzer target for ingest body parsing (object, array,
 * NDJSON): every input either yields events or an error whose position
 * lies inside the body.
 *
 * It is also a differential test of the hand-written fast path
 * (sophia_ingest_parse_fast) against jansson, which it exists to speed up:
 * whenever the fast path accepts a body, jansson must accept it too and
 * produce equal events. The fast path may decline (NULL) anything it does
 * not handle - sophia_ingest_parse then falls back to jansson - but it must
 * never accept what jansson refuses or read a value differently.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "ingest/ingest.h"
#include "lib/jsonlimit.h"

/* The reference: the body as a sequence of JSON texts (object, or array of
 * objects), each parsed by jansson, as sophia_ingest_parse's slow path. */
static json_t *reference_parse(const char *body, size_t len)
{
    json_t *events = json_array();
    size_t pos = 0;
    for (;;) {
        while (pos < len && (body[pos] == ' ' || body[pos] == '\t' ||
                             body[pos] == '\n' || body[pos] == '\r'))
            pos++;
        if (pos == len)
            break;
        json_error_t je;
        json_t *v = json_loadb(body + pos, len - pos,
                               JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
        if (!v || !(json_is_object(v) || json_is_array(v))) {
            json_decref(v);
            json_decref(events);
            return NULL;
        }
        if (json_is_object(v))
            json_array_append_new(events, v);
        else {
            json_array_extend(events, v);
            json_decref(v);
        }
        pos += (size_t)je.position;
    }
    return events;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    sophia_parse_error e;
    json_t *v = sophia_ingest_parse(body, size, &e);
    if (!v && e.offset > size)
        abort(); /* an error must point inside the body */
    json_decref(v);

    /* The fast path recurses: like sophia_ingest_parse, only below the cap. */
    if (sophia_json_too_deep(body, size, SOPHIA_JSON_MAX_DEPTH))
        return 0;
    json_t *fast = sophia_ingest_parse_fast(body, size);
    if (fast) {
        json_t *ref = reference_parse(body, size);
        if (!ref || !json_equal(fast, ref))
            abort(); /* the fast path read the body differently */
        json_decref(ref);
    }
    json_decref(fast);
    return 0;
}
