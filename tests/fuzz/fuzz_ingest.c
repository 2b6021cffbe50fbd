/*
 * fuzz_ingest - libFuzzer target for ingest body parsing (object, array,
 * NDJSON): every input either yields events or an error whose position
 * lies inside the body.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sophia_parse_error e;
    json_t *v = sophia_ingest_parse((const char *)data, size, &e);
    if (!v && e.offset > size)
        abort(); /* an error must point inside the body */
    json_decref(v);
    return 0;
}
