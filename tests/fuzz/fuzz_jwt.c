/*
 * fuzz_jwt - libFuzzer target for the WebSocket JWT parser and verifier:
 * any token text is refused or accepted without crashing, and a token the
 * fuzzer re-signs with the same secret must verify (round trip).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/ws_jwt.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tok = malloc(size + 1);
    if (!tok)
        return 0;
    memcpy(tok, data, size);
    tok[size] = '\0';
    json_t *claims = NULL;
    if (sophia_jwt_verify(tok, "secret", 1700000000, &claims) == SOPHIA_JWT_OK) {
        char *again = sophia_jwt_sign(claims, "secret");
        json_t *c2 = NULL;
        if (!again || sophia_jwt_verify(again, "secret", 1700000000, &c2) != SOPHIA_JWT_OK)
            abort(); /* what verified once must verify after re-signing */
        json_decref(c2);
        free(again);
    }
    json_decref(claims);
    sophia_jwt_topic_allowed(tok, "dashboard:x");
    free(tok);
    return 0;
}
