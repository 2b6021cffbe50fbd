/*
 * bearer - see bearer.h. A pointer into the header value rather than a
 * copy: callers hold the header for as long as they look at the token.
 */
#include "lib/bearer.h"

#include <stddef.h>
#include <strings.h>

#define BEARER_SCHEME "Bearer "
#define BEARER_SCHEME_LEN 7

const char *sophia_bearer_token(const char *h)
{
    if (!h || strncasecmp(h, BEARER_SCHEME, BEARER_SCHEME_LEN) != 0)
        return NULL;
    return h + BEARER_SCHEME_LEN;
}
