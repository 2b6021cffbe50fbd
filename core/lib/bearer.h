/*
 * bearer - the one reader of `Authorization: Bearer <token>` (RFC 6750),
 * for every place that takes a token that way: the API's server.tokens
 * check and the WebSocket upgrade (websocket.auth).
 *
 * The scheme name is matched without regard to case (RFC 7235 §2.1) and
 * must be followed by one space; the token is the rest of the value as
 * given, so a caller compares it as it would any other secret.
 */
#ifndef SOPHIA_BEARER_H
#define SOPHIA_BEARER_H

/* The token in header value `h`, pointing into `h`; NULL when `h` is NULL
 * or names another scheme. */
const char *sophia_bearer_token(const char *h);

#endif
