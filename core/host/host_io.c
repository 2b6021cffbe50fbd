/*
 * host_io - the I/O an output plugin asks the host for (SDK 1.2):
 * host->http_request, redis_command and pg_query on the connections the
 * core keeps (event/upstream.h), and hmac_sha256_hex to sign with.
 *
 * A plugin's callback is plugin code the host still owes while a request
 * is out, so each request counts as a pending callback of the runtime
 * (host.h): a reload unloads a retired output only once its requests
 * answered. Each has a bound - the HTTP deadline, Redis's watchdog, a
 * PostgreSQL connection that drops - and freeing the upstreams answers
 * what is left, so that wait ends.
 */
#include "host/host.h"
#include "host/host_priv.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event/upstream.h"

typedef struct io_req {
    sophia_host_rt *rt;
    void *cb;
    void *arg;
} io_req;

static io_req *io_new(sophia_self *self, void *cb, void *arg,
                      sophia_upstreams **up)
{
    sophia_host_rt *rt = sophia_host_rt_of(self);
    *up = rt ? rt->env.upstreams : NULL;
    io_req *q = *up && cb ? malloc(sizeof(*q)) : NULL;
    if (q)
        *q = (io_req){.rt = rt, .cb = cb, .arg = arg};
    return q;
}

/* Whether the request started: else its io_req goes, nothing owed. */
static int io_started(io_req *q, int rc)
{
    if (rc)
        free(q);
    else
        sophia_host_callback_begin(q->rt);
    return rc;
}

static void io_end(io_req *q)
{
    sophia_host_rt *rt = q->rt;
    free(q);
    sophia_host_callback_end(rt);
}

/* ------------------------------------------------------------------ HTTP */

typedef void (*http_cb)(void *arg, int rc, int status, const char *body,
                        size_t len);

static void on_http(void *arg, int rc, int status, const char *body, size_t len)
{
    io_req *q = arg;
    ((http_cb)q->cb)(q->arg, rc, status, body, len);
    io_end(q);
}

int sophia_host_http_request(sophia_self *self, const sophia_http_request *req,
                             http_cb cb, void *arg)
{
    sophia_upstreams *up;
    if (!req || req->struct_size < offsetof(sophia_http_request, timeout_s) +
                                       sizeof(double) || !req->url)
        return SOPHIA_EINVAL;
    io_req *q = io_new(self, (void *)cb, arg, &up);
    if (!q)
        return up ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    sophia_http_tls tls = {.verify = 1};
    if (req->struct_size >= offsetof(sophia_http_request, tls_insecure) +
                                sizeof(int)) {
        tls.ca_file = req->ca_file;
        tls.verify = !req->tls_insecure;
    }
    return io_started(q, sophia_http_client_request(
                             sophia_upstreams_http(up), req->method, req->url,
                             req->headers, req->body, req->body_len,
                             req->timeout_s, &tls, on_http, q));
}

/* ----------------------------------------------------------------- Redis */

static json_t *reply_json(const redisReply *r)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR: {
        json_t *s = json_stringn(r->str, r->len); /* NULL: not UTF-8 */
        return s ? s : json_null();
    }
    case REDIS_REPLY_INTEGER:
        return json_integer(r->integer);
    case REDIS_REPLY_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; a && i < r->elements; i++)
            json_array_append_new(a, reply_json(r->element[i]));
        return a;
    }
    default:
        return json_null();
    }
}

typedef void (*redis_cb)(void *arg, int rc, const sophia_json *reply);

static void on_redis(void *arg, redisReply *r)
{
    io_req *q = arg;
    json_t *j = r ? reply_json(r) : NULL;
    int rc = !r ? SOPHIA_EUNAVAIL : r->type == REDIS_REPLY_ERROR ? SOPHIA_EIO : 0;
    ((redis_cb)q->cb)(q->arg, rc, (const sophia_json *)j);
    json_decref(j);
    io_end(q);
}

int sophia_host_redis_command(sophia_self *self, const char *url, int argc,
                              const char *const *argv, const size_t *argvlen,
                              redis_cb cb, void *arg)
{
    sophia_upstreams *up;
    if (argc < 1 || !argv || !argvlen)
        return SOPHIA_EINVAL;
    io_req *q = io_new(self, (void *)cb, arg, &up);
    if (!q)
        return up ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    sophia_redis *r = sophia_upstreams_redis(up, url);
    return io_started(q, !r ? SOPHIA_EINVAL
                           : sophia_redis_command(r, on_redis, q, argc,
                                                  (const char **)argv,
                                                  argvlen));
}

/* ------------------------------------------------------------ PostgreSQL */

typedef void (*pg_cb)(void *arg, int rc, int64_t rows, const char *err);

/* Whether another try of the statement may succeed: SQLSTATE classes 08
 * (connection), 40 (rolled back: serialization failure, deadlock), 53
 * (insufficient resources: disk full, out of memory, too many
 * connections), 57 (operator intervention: shutdown, statement_timeout),
 * 58 (system error) and 55P03 (lock not available). Anything else - data
 * (22), integrity (23), syntax or an undefined table (42) - is the
 * statement's own, and fails again the same way. */
static int pg_transient(const char *state)
{
    static const char *const classes[] = {"08", "40", "53", "57", "58"};
    if (!state || strlen(state) != 5)
        return 0;
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (!strncmp(state, classes[i], 2))
            return 1;
    return !strcmp(state, "55P03");
}

static void on_pg(void *arg, PGresult *res, const char *err)
{
    io_req *q = arg;
    int64_t rows = 0;
    int rc = !res ? SOPHIA_EUNAVAIL : err ? SOPHIA_EIO : 0;
    char msg[700];
    if (res && !err) {
        const char *t = PQcmdTuples(res);
        rows = t && *t ? strtoll(t, NULL, 10) : PQntuples(res);
    } else if (res) { /* the server's error: its SQLSTATE says which kind */
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (pg_transient(state))
            rc = SOPHIA_EUNAVAIL;
        if (state) {
            snprintf(msg, sizeof(msg), "%s (SQLSTATE %s)", err, state);
            err = msg;
        }
    }
    ((pg_cb)q->cb)(q->arg, rc, rows, err);
    io_end(q);
}

int sophia_host_pg_query(sophia_self *self, const char *conninfo,
                         const char *sql, int nparams,
                         const char *const *values, pg_cb cb, void *arg)
{
    sophia_upstreams *up;
    if (!sql || nparams < 0 || (nparams && !values))
        return SOPHIA_EINVAL;
    io_req *q = io_new(self, (void *)cb, arg, &up);
    if (!q)
        return up ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    sophia_pg *p = sophia_upstreams_pg(up, conninfo);
    /* never queued behind a dead link: the output retries (upstream.h) */
    int rc = !p ? SOPHIA_EINVAL
             : !sophia_pg_up(p)
                 ? SOPHIA_EUNAVAIL
                 : sophia_pg_query(p, sql, nparams, values, NULL, NULL, on_pg, q);
    return io_started(q, rc);
}

/* ------------------------------------------------------------------ HMAC */

int sophia_host_hmac_sha256_hex(const void *key, size_t key_len,
                                const void *data, size_t len, char hex[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!hex || (!key && key_len) || (!data && len) || key_len > INT32_MAX)
        return SOPHIA_EINVAL;
    if (!HMAC(EVP_sha256(), key ? key : "", (int)key_len,
              data ? data : (const void *)"", len, mac, &n) || n != 32)
        return SOPHIA_EINVAL;
    for (unsigned i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    return 0;
}
