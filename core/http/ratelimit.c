/*
 * ratelimit - see ratelimit.h.
 */
#include "http/ratelimit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

struct sophia_ratelimit {
    bucket table[SLOTS];
    bucket keep[SLOTS]; /* sweep's scratch: 192 KiB, not on the stack */
    size_t used;
    uint64_t refused;
};

sophia_ratelimit *sophia_ratelimit_new(void)
{
    return calloc(1, sizeof(sophia_ratelimit));
}

void sophia_ratelimit_free(sophia_ratelimit *rl)
{
    free(rl);
}

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
static void sweep(sophia_ratelimit *rl, double rate, double burst,
                  int64_t now_us)
{
    bucket *table = rl->table, *keep = rl->keep;
    size_t n = 0;
    for (size_t i = 0; i < SLOTS; i++) {
        if (!table[i].key)
            continue;
        refill(&table[i], rate, burst, now_us);
        if (table[i].tokens < burst)
            keep[n++] = table[i];
    }
    memset(rl->table, 0, sizeof(rl->table));
    rl->used = 0;
    if (n > MAX_USED / 2)
        return; /* still crowded: start over */
    for (size_t k = 0; k < n; k++) {
        size_t i = keep[k].key & (SLOTS - 1);
        while (table[i].key)
            i = (i + 1) & (SLOTS - 1);
        table[i] = keep[k];
        rl->used++;
    }
}

static bucket *find(sophia_ratelimit *rl, uint64_t key, double rate,
                    double burst, int64_t now_us)
{
    if (rl->used >= MAX_USED)
        sweep(rl, rate, burst, now_us);
    bucket *table = rl->table;
    size_t i = key & (SLOTS - 1);
    while (table[i].key && table[i].key != key)
        i = (i + 1) & (SLOTS - 1);
    if (!table[i].key) {
        table[i] = (bucket){key, burst, now_us};
        rl->used++;
    }
    return &table[i];
}

int sophia_ratelimit_take(sophia_ratelimit *rl, const char *caller,
                          double rate, double burst, int64_t now_us)
{
    if (burst < 1)
        burst = 1;
    bucket *b = find(rl, hash(caller), rate, burst, now_us);
    refill(b, rate, burst, now_us);
    if (b->tokens >= 1) {
        b->tokens -= 1;
        return 0;
    }
    rl->refused++;
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

int sophia_ratelimit_admit(sophia_ratelimit *rl, sophia_http_req *r,
                           const sophia_conf *c)
{
    double rate = (double)c->server.rate_limit.rate;
    if (rate <= 0 || !rl)
        return 1;
    double burst = c->server.rate_limit.burst ? (double)c->server.rate_limit.burst
                                              : rate;
    char who[600];
    int wait = sophia_ratelimit_take(rl, caller_of(r, c->server.tokens, who,
                                                   sizeof(who)),
                                     rate, burst, sophia_now_mono_us());
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

uint64_t sophia_ratelimit_refused(const sophia_ratelimit *rl)
{
    return rl ? rl->refused : 0;
}

void sophia_ratelimit_reset(sophia_ratelimit *rl)
{
    memset(rl->table, 0, sizeof(rl->table));
    rl->used = 0;
}
