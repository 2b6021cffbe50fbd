/*
 * fuzz_slack - libFuzzer target for the Slack signature and timestamp
 * check: the input is split into timestamp, signature and body at the
 * first two NULs; nothing but a correct signature may pass.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/hooks.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    const char *ts = buf;
    const char *sig = ts + strlen(ts) + 1;
    if (sig > buf + size)
        sig = buf + size;
    const char *body = sig + strlen(sig) + 1;
    size_t blen = body <= buf + size ? (size_t)(buf + size - body) : 0;
    if (body > buf + size)
        body = buf + size;
    if (sophia_slack_verify("8f742231b10e8888abcd99yyyzzz85a5", ts, sig, body,
                            blen, 1531420618) == SOPHIA_SLACK_OK &&
        strncmp(sig, "v0=", 3) != 0)
        abort(); /* only a v0 signature can be right */
    free(buf);
    return 0;
}
