/*
 * ratelimit - see ratelimit.h.
 */
#include "http/ratelimit.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "lib/bearer.h"
#include "lib/hash.h"
#include "event/loop.h"

#define SLOTS 8192             /* power of two */
#define MAX_USED (SLOTS * 3 / 4)

typedef struct bucket {
    uint64_t key; /* 0 = free */
    double tokens;
    int64_t at_us; /* when `tokens` was last brought up to date */
} bucket;

static bucket table[SLOTS];
static size_t used;
static uint64_t refused;

/* Never 0 (0 marks a free slot). Keyed: callers choose their tokens. */
static uint64_t hash(const char *s)
{
    uint64_t h = sophia_hash(s, strlen(s));
    return h ? h : 1;
}

static void refill(bucket *b, double rate, double burst, int64_t now_us)
{
    if (now_us > b->at_us)
        b->tokens += (double)(now_us - b->at_us) * rate / 1e6;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at_us = now_us;
}

/* Drops full buckets (a fresh one is the same); all of them if need be. */
static void sweep(double rate, double burst, int64_t now_us)
{
    static bucket keep[SLOTS]; /* 192 KiB: not on the stack */
    size_t n = 0;
    for (size_t i = 0; i < SLOTS; i++) {
        if (!table[i].key)
            continue;
        refill(&table[i], rate, burst, now_us);
        if (table[i].tokens < burst)
            keep[n++] = table[i];
    }
    memset(table, 0, sizeof(table));
    used = 0;
    if (n > MAX_USED / 2)
        return; /* still crowded: start over */
    for (size_t k = 0; k < n; k++) {
        size_t i = keep[k].key & (SLOTS - 1);
        while (table[i].key)
            i = (i + 1) & (SLOTS - 1);
        table[i] = keep[k];
        used++;
    }
}

static bucket *find(uint64_t key, double rate, double burst, int64_t now_us)
{
    if (used >= MAX_USED)
        sweep(rate, burst, now_us);
    size_t i = key & (SLOTS - 1);
    while (table[i].key && table[i].key != key)
        i = (i + 1) & (SLOTS - 1);
    if (!table[i].key) {
        table[i] = (bucket){key, burst, now_us};
        used++;
    }
    return &table[i];
}

int sophia_ratelimit_take(const char *caller, double rate, double burst,
                          int64_t now_us)
{
    if (burst < 1)
        burst = 1;
    bucket *b = find(hash(caller), rate, burst, now_us);
    refill(b, rate, burst, now_us);
    if (b->tokens >= 1) {
        b->tokens -= 1;
        return 0;
    }
    refused++;
    double wait = ceil((1 - b->tokens) / rate);
    return wait < 1 ? 1 : wait > 3600 ? 3600 : (int)wait;
}

/* "t:<token>" when tokens are configured and one is given, else "ip:…". */
static const char *caller_of(sophia_http_req *r, const char *tokens,
                             char *buf, size_t cap)
{
    const char *tok = sophia_bearer_token(sophia_http_req_header(r, "authorization"));
    if (tokens && *tokens && tok) {
        snprintf(buf, cap, "t:%s", tok);
        return buf;
    }
    char ip[64];
    snprintf(buf, cap, "ip:%s", sophia_http_req_peer(r, ip, sizeof(ip)));
    return buf;
}

int sophia_ratelimit_admit(sophia_http_req *r, const sophia_conf *c)
{
    double rate = (double)c->server.rate_limit.rate;
    if (rate <= 0)
        return 1;
    double burst = c->server.rate_limit.burst ? (double)c->server.rate_limit.burst
                                              : rate;
    char who[600];
    int wait = sophia_ratelimit_take(caller_of(r, c->server.tokens, who, sizeof(who)), rate,
                                     burst, sophia_now_mono_us());
    if (wait == 0)
        return 1;
    sophia_http_set_retry_after(r, wait);
    sophia_http_reply_error(r, 429, "rate_limited",
                            "over server.rate_limit (%zu requests/s, burst %zu) "
                            "for this %s; retry after %d s",
                            c->server.rate_limit.rate, (size_t)burst,
                            strncmp(who, "t:", 2) == 0 ? "token" : "address",
                            wait);
    return 0;
}

uint64_t sophia_ratelimit_refused(void)
{
    return refused;
}

void sophia_ratelimit_reset(void)
{
    memset(table, 0, sizeof(table));
    used = 0;
}
