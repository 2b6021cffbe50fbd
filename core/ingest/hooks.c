/*
 * hooks - see hooks.h.
 *
 * Secrets and signatures are compared with CRYPTO_memcmp, so the time a
 * check takes says nothing of how much of a guess was right.
 */
#include "ingest/hooks.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/dedup.h"
#include "lib/bearer.h"

sophia_slack_check sophia_slack_verify(const char *secret, const char *ts,
                                       const char *sig, const char *body,
                                       size_t len, int64_t now_s)
{
    if (!ts || !sig || !*ts || !*sig)
        return SOPHIA_SLACK_MISSING;
    char *end;
    long long t = strtoll(ts, &end, 10);
    if (*end || end == ts || t < 0 || llabs(now_s - t) > SOPHIA_SLACK_WINDOW_S)
        return SOPHIA_SLACK_STALE;
    size_t tl = strlen(ts), ml = 3 + tl + 1 + len;
    unsigned char *msg = malloc(ml ? ml : 1), mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!msg)
        return SOPHIA_SLACK_BAD;
    memcpy(msg, "v0:", 3);
    memcpy(msg + 3, ts, tl);
    msg[3 + tl] = ':';
    memcpy(msg + 4 + tl, body, len);
    int ok = HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, ml, mac,
                  &maclen) != NULL;
    free(msg);
    char want[3 + 2 * EVP_MAX_MD_SIZE + 1] = "v0=";
    for (unsigned i = 0; i < maclen; i++)
        snprintf(want + 3 + 2 * i, 3, "%02x", mac[i]);
    size_t wl = strlen(want);
    if (!ok || strlen(sig) != wl || CRYPTO_memcmp(want, sig, wl) != 0)
        return SOPHIA_SLACK_BAD;
    return SOPHIA_SLACK_OK;
}

struct sophia_slack_filter {
    sophia_dedup *seen; /* made at first use, sized by the window then */
};

sophia_slack_filter *sophia_slack_filter_new(void)
{
    return calloc(1, sizeof(sophia_slack_filter));
}

void sophia_slack_filter_free(sophia_slack_filter *f)
{
    if (!f)
        return;
    sophia_dedup_free(f->seen);
    free(f);
}

int sophia_slack_seen(sophia_slack_filter *f, double window_s,
                      const char *eid, int64_t now_us)
{
    if (!f || (!f->seen && !(f->seen = sophia_dedup_new(window_s, 100000))))
        return -1;
    return eid && sophia_dedup_seen(f->seen, eid, now_us);
}

void sophia_slack_remember(sophia_slack_filter *f, const char *eid,
                           int64_t now_us)
{
    if (eid && f && f->seen)
        sophia_dedup_add(f->seen, eid, now_us);
}

sophia_gong_check sophia_gong_verify(const char *secret,
                                     const char *authorization,
                                     const char *x_gong_secret,
                                     const char *query_key, int allow_query)
{
    const char *given = sophia_bearer_token(authorization);
    if (!given)
        given = x_gong_secret;
    if (!given) {
        if (query_key && !allow_query)
            return SOPHIA_GONG_QUERY_OFF;
        given = query_key;
    }
    size_t gl = given ? strlen(given) : 0, sl = strlen(secret);
    return given && gl == sl && CRYPTO_memcmp(given, secret, sl) == 0
               ? SOPHIA_GONG_OK
               : SOPHIA_GONG_BAD;
}
