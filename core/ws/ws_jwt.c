/*
 * ws_jwt - see ws_jwt.h.
 */
#include "ws/ws_jwt.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#define JWT_MAX_LEN 8192

const char *sophia_jwt_strerror(sophia_jwt_status s)
{
    switch (s) {
    case SOPHIA_JWT_OK: return "ok";
    case SOPHIA_JWT_MALFORMED: return "token is not a JWT (header.payload.signature)";
    case SOPHIA_JWT_BAD_ALG: return "token algorithm is not HS256";
    case SOPHIA_JWT_BAD_SIG: return "token signature is invalid";
    case SOPHIA_JWT_EXPIRED: return "token expired";
    case SOPHIA_JWT_NOT_YET: return "token not valid yet (nbf)";
    case SOPHIA_JWT_BAD_CLAIMS: return "token claims are malformed";
    case SOPHIA_JWT_NO_EXP: return "token has no exp (websocket.jwt.require_exp)";
    case SOPHIA_JWT_BAD_ISS: return "token iss is not websocket.jwt.issuer";
    case SOPHIA_JWT_BAD_AUD: return "token aud does not name websocket.jwt.audience";
    }
    return "unknown";
}

static int b64url_val(char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '-') return 62;
    if (ch == '_') return 63;
    return -1;
}

/* Decodes unpadded base64url; returns the length or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}

static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tab[(acc >> bits) & 63];
        }
    }
    if (bits)
        out[o++] = tab[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return o;
}

static json_t *decode_json_part(const char *p, size_t n)
{
    unsigned char buf[JWT_MAX_LEN];
    long len = b64url_decode(p, n, buf);
    if (len < 0)
        return NULL;
    json_t *j = json_loadb((const char *)buf, (size_t)len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static void hs256(const char *secret, const char *data, size_t n,
                  unsigned char mac[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)data,
         n, mac, &len);
}

/* NULL or an array of strings. */
static int strings_or_absent(const json_t *a)
{
    const json_t *t;
    size_t i;
    if (!a)
        return 1;
    if (!json_is_array(a))
        return 0;
    json_array_foreach(a, i, t) if (!json_is_string(t))
        return 0;
    return 1;
}

/* One memory scope: an object of string/integer values. */
static int memory_scope_ok(const json_t *o)
{
    const char *k;
    const json_t *v;
    if (!json_is_object(o) || json_object_size(o) == 0)
        return 0;
    json_object_foreach((json_t *)o, k, v) if (!json_is_string(v) && !json_is_integer(v))
        return 0;
    return 1;
}

static int scopes_ok(const json_t *c)
{
    const json_t *mem = json_object_get(c, "memory"), *s = json_object_get(c, "stats"), *m;
    size_t i;
    if (!strings_or_absent(json_object_get(c, "topics")) ||
        !strings_or_absent(json_object_get(c, "cache")) || (s && !json_is_boolean(s)))
        return 0;
    if (!mem || json_is_object(mem))
        return !mem || memory_scope_ok(mem);
    if (!json_is_array(mem))
        return 0;
    json_array_foreach(mem, i, m) if (!memory_scope_ok(m))
        return 0;
    return 1;
}

/* aud: the audience itself, or an array holding it (RFC 7519 4.1.3). */
static int aud_names(const json_t *aud, const char *want)
{
    const json_t *a;
    size_t i;
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    json_array_foreach(aud, i, a) if (json_is_string(a) && strcmp(json_string_value(a), want) == 0)
        return 1;
    return 0;
}

static sophia_jwt_status check_claims(json_t *c, int64_t now_s,
                                      const sophia_jwt_policy *p)
{
    json_t *exp = json_object_get(c, "exp"), *nbf = json_object_get(c, "nbf");
    if ((exp && !json_is_number(exp)) || (nbf && !json_is_number(nbf)) || !scopes_ok(c))
        return SOPHIA_JWT_BAD_CLAIMS;
    if (!exp && p && p->require_exp)
        return SOPHIA_JWT_NO_EXP;
    if (exp && json_number_value(exp) <= (double)now_s)
        return SOPHIA_JWT_EXPIRED;
    if (nbf && json_number_value(nbf) > (double)now_s)
        return SOPHIA_JWT_NOT_YET;
    const char *iss = json_string_value(json_object_get(c, "iss"));
    if (p && p->issuer && (!iss || strcmp(iss, p->issuer) != 0))
        return SOPHIA_JWT_BAD_ISS;
    if (p && p->audience && !aud_names(json_object_get(c, "aud"), p->audience))
        return SOPHIA_JWT_BAD_AUD;
    return SOPHIA_JWT_OK;
}

sophia_jwt_status sophia_jwt_verify_policy(const char *token, const char *secret,
                                           int64_t now_s,
                                           const sophia_jwt_policy *policy,
                                           json_t **claims)
{
    if (claims)
        *claims = NULL;
    size_t n = strlen(token);
    const char *d1 = memchr(token, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - token)) : NULL;
    if (n > JWT_MAX_LEN || !d1 || !d2 || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - token)))
        return SOPHIA_JWT_MALFORMED;
    json_t *hdr = decode_json_part(token, (size_t)(d1 - token));
    if (!hdr)
        return SOPHIA_JWT_MALFORMED;
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    int hs = alg && strcmp(alg, "HS256") == 0;
    json_decref(hdr);
    if (!hs)
        return SOPHIA_JWT_BAD_ALG;
    unsigned char sig[64], mac[32];
    size_t sig_chars = strlen(d2 + 1);
    long slen = sig_chars == 43 ? b64url_decode(d2 + 1, sig_chars, sig) : -1;
    hs256(secret, token, (size_t)(d2 - token), mac);
    if (slen != 32 || CRYPTO_memcmp(sig, mac, 32) != 0)
        return SOPHIA_JWT_BAD_SIG;
    json_t *c = decode_json_part(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!c)
        return SOPHIA_JWT_MALFORMED;
    sophia_jwt_status st = check_claims(c, now_s, policy);
    if (st == SOPHIA_JWT_OK && claims)
        *claims = c;
    else
        json_decref(c);
    return st;
}

sophia_jwt_status sophia_jwt_verify(const char *token, const char *secret,
                                    int64_t now_s, json_t **claims)
{
    return sophia_jwt_verify_policy(token, secret, now_s, NULL, claims);
}

char *sophia_jwt_sign(json_t *claims, const char *secret)
{
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *body = json_dumps(claims, JSON_COMPACT);
    if (!body)
        return NULL;
    size_t bl = strlen(body);
    char *out = malloc((sizeof(hdr) + bl) * 4 / 3 + 64);
    if (!out) {
        free(body);
        return NULL;
    }
    size_t o = b64url_encode((const unsigned char *)hdr, sizeof(hdr) - 1, out);
    out[o++] = '.';
    o += b64url_encode((const unsigned char *)body, bl, out + o);
    free(body);
    unsigned char mac[32];
    hs256(secret, out, o, mac);
    out[o++] = '.';
    b64url_encode(mac, 32, out + o);
    return out;
}

int sophia_jwt_topic_allowed(const char *allowed, const char *sub)
{
    size_t a = strlen(allowed), s = strlen(sub);
    if (a && allowed[a - 1] == '*')
        return s >= a - 1 && strncmp(allowed, sub, a - 1) == 0;
    return strcmp(allowed, sub) == 0;
}
