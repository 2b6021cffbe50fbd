/*
 * redis_stream - an output plugin (SDK 1.2): appends each record of a
 * batch to a Redis stream, `XADD <key> [MAXLEN ~ <maxlen>] * <field>
 * <record JSON>`, all of a batch in one MULTI/EXEC, on the host's
 * connection to `url` (empty: the daemon's redis.url).
 *
 * The batch is delivered when EXEC answered with an entry id for every
 * record. Redis down, a dropped connection or a timeout make the host
 * deliver the batch again after a back-off (the events wait,
 * unacknowledged); an error reply (the key holds another type, ...) is
 * a refusal for good. A batch whose EXEC ran but whose answer was lost
 * is appended again: consumers see each record at least once (the
 * record's stream and id tell copies apart).
 *
 * Everything goes through the host table: the plugin includes
 * <sophia/sdk.h> and libc, and links nothing.
 */
#include <sophia/sdk.h>

#include "../output_batching.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rs_state {
    const sophia_host *host;
    sophia_self *self;
    const char *url;   /* NULL: the daemon's redis.url */
    const char *key;   /* borrowed from the options until fini */
    const char *field;
    char maxlen[24];   /* "" = no trimming */
    sophia_output_params params;
} rs_state;

/* One batch's MULTI/XADD.../EXEC in flight. */
typedef struct rs_tx {
    rs_state *st;
    sophia_output_call *call;
    size_t count;   /* records */
    size_t waiting; /* replies not in yet, plus one while sending */
    int rc;         /* the first failure */
} rs_tx;

static const sophia_option rs_options[] = {
    {"key", SOPHIA_OPT_STRING, NULL, "the Redis stream appended to"},
    {"url", SOPHIA_OPT_STRING, "", "redis://... ; empty = redis.url"},
    {"field", SOPHIA_OPT_STRING, "data", "entry field holding the record"},
    {"maxlen", SOPHIA_OPT_INT, "0",
     "trim the stream to about this many entries (MAXLEN ~); 0 = never"},
    SOPHIA_OUTPUT_BATCH_OPTIONS,
    {NULL, 0, NULL, NULL},
};

static int rs_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    if (host->abi_major != SOPHIA_SDK_VERSION_MAJOR ||
        !SOPHIA_HOST_HAS(host, redis_command))
        return SOPHIA_EABI;
    int64_t maxlen = host->opt_int(opts, "maxlen");
    const char *key = host->opt_string(opts, "key");
    if (maxlen < 0 || !key || !*key) {
        host->log(self, SOPHIA_LOG_ERROR, "%s",
                  maxlen < 0 ? "maxlen must be >= 0" : "key is empty");
        return SOPHIA_EINVAL;
    }
    rs_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    const char *url = host->opt_string(opts, "url");
    st->url = url && *url ? url : NULL;
    st->key = key;
    st->field = host->opt_string(opts, "field");
    if (maxlen > 0)
        snprintf(st->maxlen, sizeof(st->maxlen), "%lld", (long long)maxlen);
    if (output_batching_read(host, self, opts, &st->params) != SOPHIA_OK) {
        free(st);
        return SOPHIA_EINVAL;
    }
    *state = st;
    return SOPHIA_OK;
}

static void rs_fini(void *state)
{
    free(state);
}

static void rs_params(void *state, sophia_output_params *p)
{
    output_batching_apply(&((const rs_state *)state)->params, p);
}

/* Whether EXEC's answer holds an entry id for each of `n` records (a
 * command that failed inside the transaction answers an error there). */
static int rs_exec_ok(const sophia_host *h, const sophia_json *reply, size_t n)
{
    if (h->json_type(reply) != SOPHIA_JSON_ARRAY || h->json_size(reply) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *id = h->json_string(h->json_at(reply, i));
        if (!id || !strchr(id, '-') || id[0] < '0' || id[0] > '9')
            return 0;
    }
    return 1;
}

static void rs_settle(rs_tx *tx)
{
    if (--tx->waiting)
        return;
    tx->st->host->output_done(tx->call, tx->rc);
    free(tx);
}

static void rs_reply(void *arg, int rc, const sophia_json *reply)
{
    rs_tx *tx = arg;
    (void)reply;
    if (rc && !tx->rc)
        tx->rc = rc == SOPHIA_EIO ? SOPHIA_EINVAL : rc; /* error reply: for good */
    rs_settle(tx);
}

static void rs_exec_reply(void *arg, int rc, const sophia_json *reply)
{
    rs_tx *tx = arg;
    const sophia_host *h = tx->st->host;
    if (!rc && !rs_exec_ok(h, reply, tx->count))
        rc = h->json_type(reply) == SOPHIA_JSON_NULL ? SOPHIA_EUNAVAIL
                                                     : SOPHIA_EIO;
    if (rc)
        h->log(tx->st->self, SOPHIA_LOG_WARN, "XADD to %s: %s", tx->st->key,
               h->strerror(rc));
    rs_reply(arg, rc, reply);
}

/* Sends one command of the transaction; a refusal ends the sending. */
static int rs_send(rs_tx *tx, int argc, const char *const *argv,
                   void (*cb)(void *, int, const sophia_json *))
{
    size_t len[10];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    int rc = tx->st->host->redis_command(tx->st->self, tx->st->url, argc, argv,
                                         len, cb, tx);
    if (rc)
        tx->rc = tx->rc ? tx->rc : rc;
    else
        tx->waiting++;
    return rc;
}

static int rs_xadd(rs_tx *tx, const sophia_json *rec)
{
    const sophia_host *h = tx->st->host;
    char *text = h->json_dump(rec);
    if (!text)
        return tx->rc = SOPHIA_ENOMEM;
    const char *argv[9] = {"XADD", tx->st->key};
    int argc = 2;
    if (tx->st->maxlen[0]) {
        argv[argc++] = "MAXLEN";
        argv[argc++] = "~";
        argv[argc++] = tx->st->maxlen;
    }
    argv[argc++] = "*";
    argv[argc++] = tx->st->field;
    argv[argc++] = text;
    int rc = rs_send(tx, argc, argv, rs_reply);
    h->free(text); /* the host copied the command */
    return rc;
}

static void rs_deliver(void *state, const sophia_output_batch *b,
                       sophia_output_call *call)
{
    rs_state *st = state;
    rs_tx *tx = calloc(1, sizeof(*tx));
    if (!tx) {
        st->host->output_done(call, SOPHIA_ENOMEM);
        return;
    }
    *tx = (rs_tx){.st = st, .call = call, .count = b->count, .waiting = 1};
    static const char *const multi[] = {"MULTI"}, *const exec[] = {"EXEC"},
                             *const discard[] = {"DISCARD"};
    /* Sent in one loop turn on one connection: nothing of anyone else's
     * gets between MULTI and EXEC. Redis refuses only while down, when
     * the connection and its open MULTI are gone anyway. */
    if (rs_send(tx, 1, multi, rs_reply) == SOPHIA_OK) {
        for (size_t i = 0; i < b->count; i++)
            if (rs_xadd(tx, st->host->json_at(b->records, i)) != SOPHIA_OK)
                break;
        if (!tx->rc)
            rs_send(tx, 1, exec, rs_exec_reply);
        else /* e.g. out of memory: leave no transaction open */
            rs_send(tx, 1, discard, rs_reply);
    }
    rs_settle(tx); /* the hold taken above */
}

static const sophia_output_ops rs_ops = {
    .struct_size = sizeof(sophia_output_ops),
    .deliver = rs_deliver,
    .params = rs_params,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "redis_stream",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_OUTPUT,
    .description = "XADD processed events and alerts to a Redis stream",
    .options = rs_options,
    .init = rs_init,
    .fini = rs_fini,
    .output = &rs_ops,
};
