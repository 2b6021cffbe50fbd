/*
 * ws_jwt - verification of the HS256 JSON Web Tokens that authenticate
 * WebSocket clients (SPEC §5).
 *
 * Only HS256 is accepted: the header's `alg` must say so, which closes the
 * classic `alg: none` and algorithm-confusion holes. The signature is an
 * HMAC-SHA256 from OpenSSL's libcrypto, compared in constant time. Claims
 * used: `sub` (who, for logs), `exp` (seconds since the epoch; past it the
 * token is refused as expired), `nbf` (not before) and `topics` (an array
 * of allowed topic patterns; absent = every topic).
 */
#ifndef SOPHIA_WS_JWT_H
#define SOPHIA_WS_JWT_H

#include <jansson.h>
#include <stdint.h>

typedef enum {
    SOPHIA_JWT_OK = 0,
    SOPHIA_JWT_MALFORMED, /* not three base64url parts of JSON */
    SOPHIA_JWT_BAD_ALG,   /* header alg is not HS256 */
    SOPHIA_JWT_BAD_SIG,   /* signature does not verify */
    SOPHIA_JWT_EXPIRED,   /* exp <= now */
    SOPHIA_JWT_NOT_YET,   /* nbf > now */
    SOPHIA_JWT_BAD_CLAIMS /* exp/nbf not numbers, topics not strings */
} sophia_jwt_status;

const char *sophia_jwt_strerror(sophia_jwt_status s);

/* Verifies `token` with `secret` at time `now_s`; on OK, *claims (if not
 * NULL) receives the payload object (caller decrefs). */
sophia_jwt_status sophia_jwt_verify(const char *token, const char *secret,
                                    int64_t now_s, json_t **claims);

/* Builds a token (tests and tools). Returns malloc'd text. */
char *sophia_jwt_sign(json_t *claims, const char *secret);

/* 1 when `sub` (a topic or a `prefix*` pattern) is within `allowed` (same
 * syntax): equal, or inside the allowed prefix. */
int sophia_jwt_topic_allowed(const char *allowed, const char *sub);

#endif
