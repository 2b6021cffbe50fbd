/*
 * fuzz_statsd - libFuzzer target for the DogStatsD line parser: each
 * newline-separated line parses to a point, is skipped, or is refused
 * with a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/statsd.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    while (p <= end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        int skip = 0;
        char err[256] = "";
        json_t *v = sophia_statsd_parse_line(p, len, &skip, err, sizeof(err));
        if (!v && !skip && !err[0])
            abort(); /* a refused line must say why */
        json_decref(v);
        if (!nl)
            break;
        p = nl + 1;
    }
    return 0;
}
