/*
 * ws_jwt - verification of the HS256 JSON Web Tokens that authenticate
 * WebSocket clients (SPEC §5).
 *
 * Only HS256 is accepted: the header's `alg` must say so, which closes the
 * classic `alg: none` and algorithm-confusion holes. The signature is an
 * HMAC-SHA256 from OpenSSL's libcrypto, compared in constant time. Claims
 * used: `sub` (who, for logs), `exp` (seconds since the epoch; past it the
 * token is refused as expired; required by the policy's require_exp),
 * `nbf` (not before), `iss` and `aud` (checked when the policy names an
 * issuer / audience; `aud` may be a string or an array holding it), and
 * the scopes ws.c enforces: `topics` and `cache` (arrays of patterns,
 * `prefix*` or exact), `memory` (an object or an array of objects of
 * scalar context values such as {"user_id":"u1","agent_id":"a1"}) and
 * `stats` (a boolean). Scopes of the wrong shape make the token
 * malformed (BAD_CLAIMS) rather than silently granting nothing.
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
    SOPHIA_JWT_BAD_CLAIMS, /* exp/nbf not numbers, scopes of the wrong shape */
    SOPHIA_JWT_NO_EXP,    /* no exp, and the policy requires one */
    SOPHIA_JWT_BAD_ISS,   /* iss is not the policy's issuer */
    SOPHIA_JWT_BAD_AUD    /* aud does not name the policy's audience */
} sophia_jwt_status;

/* What a deployment demands beyond a valid signature and time window
 * (websocket.jwt). NULL fields demand nothing. */
typedef struct sophia_jwt_policy {
    int require_exp;
    const char *issuer;
    const char *audience;
} sophia_jwt_policy;

const char *sophia_jwt_strerror(sophia_jwt_status s);

/* Verifies `token` with `secret` at time `now_s` under `policy` (NULL =
 * no exp/iss/aud requirement); on OK, *claims (if not NULL) receives the
 * payload object (caller decrefs). */
sophia_jwt_status sophia_jwt_verify_policy(const char *token, const char *secret,
                                           int64_t now_s,
                                           const sophia_jwt_policy *policy,
                                           json_t **claims);
/* The same with no policy (fuzzing, tools). */
sophia_jwt_status sophia_jwt_verify(const char *token, const char *secret,
                                    int64_t now_s, json_t **claims);

/* Builds a token (tests and tools). Returns malloc'd text. */
char *sophia_jwt_sign(json_t *claims, const char *secret);

/* 1 when `sub` (a topic or a `prefix*` pattern) is within `allowed` (same
 * syntax): equal, or inside the allowed prefix. */
int sophia_jwt_topic_allowed(const char *allowed, const char *sub);

#endif
