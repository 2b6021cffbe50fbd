/*
 * webhook - an output plugin (SDK 1.2): POSTs each batch of records as
 * one JSON array to `url`, signed with HMAC-SHA256.
 *
 * The body is the batch as the host made it (sophia_output_batch.json):
 * [{"type":"event","stream":...,"id":...,"event":{...}}, {"type":"alert",
 * ...}, ...]. With a secret (the variable `secret_env` names), the header
 * `signature_header` carries "sha256=<hex>", the HMAC-SHA256 of the exact
 * body bytes under the secret, which the receiver recomputes to know the
 * body came from this daemon unaltered. A 2xx answer delivers the batch;
 * 408, 429, 5xx, a timeout or a refused connection make the host deliver
 * it again after a back-off (the events wait, unacknowledged); any other
 * status is a refusal for good (the events are retried by their stream
 * and dead-lettered after its max_attempts).
 *
 * An https:// url is verified by the host's TLS client: the certificate
 * chain against the system's CA store (or the PEM bundle `ca_file`), and
 * the url's host name or address against the certificate. A server that
 * fails it is like one that is down - retried, its events waiting - and
 * each try logs why, with the instance and the url. `tls_verify: false`
 * turns the check off, for tests against a throwaway certificate only,
 * and says so in the log at load.
 *
 * Everything goes through the host table: the plugin includes
 * <sophia/sdk.h> and libc, and links nothing.
 */
#include <sophia/sdk.h>

#include "../output_batching.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WH_MAX_HEADERS 16

typedef struct wh_state {
    const sophia_host *host;
    sophia_self *self;
    const char *url; /* borrowed from the options until fini */
    char *secret;    /* NULL: unsigned */
    char sig_name[128];
    const char *headers[WH_MAX_HEADERS + 4]; /* NULL-terminated */
    size_t nheaders; /* the configured ones; the rest is per request */
    double timeout;
    const char *ca_file; /* NULL: the system store */
    int insecure;
    sophia_output_params params;
} wh_state;

/* One POST in progress: its headers, and the call to report. */
typedef struct wh_post {
    wh_state *st;
    sophia_output_call *call;
    char sig[128 + 80]; /* "<name>: sha256=<64 hex>" */
} wh_post;

static const sophia_option wh_options[] = {
    {"url", SOPHIA_OPT_STRING, NULL,
     "http[s]://host[:port]/path to POST to"},
    {"ca_file", SOPHIA_OPT_STRING, "",
     "https: PEM CA bundle to verify the server against; empty = the "
     "system's CA store"},
    {"tls_verify", SOPHIA_OPT_BOOL, "true",
     "https: verify the server's certificate and name; false for tests "
     "only"},
    {"secret_env", SOPHIA_OPT_STRING, "",
     "environment variable holding the HMAC secret; empty = unsigned"},
    {"signature_header", SOPHIA_OPT_STRING, "X-Sophia-Signature",
     "header carrying sha256=<hex HMAC-SHA256 of the body>"},
    {"headers", SOPHIA_OPT_LIST, NULL, "extra \"Name: value\" headers"},
    {"timeout", SOPHIA_OPT_DOUBLE, "10", "seconds one POST may take"},
    SOPHIA_OUTPUT_BATCH_OPTIONS,
    {NULL, 0, NULL, NULL},
};

static void wh_fini(void *state)
{
    wh_state *st = state;
    if (st)
        free(st->secret);
    free(st);
}

/* ca_file must be readable now, not at the first delivery; tls_verify:
 * false is said once, loudly. */
static int wh_tls_init(wh_state *st, const sophia_opts *opts)
{
    const sophia_host *h = st->host;
    const char *ca = h->opt_string(opts, "ca_file");
    st->ca_file = ca && *ca ? ca : NULL;
    st->insecure = !h->opt_bool(opts, "tls_verify");
    int https = !strncmp(st->url, "https://", 8);
    if (st->ca_file) {
        FILE *f = fopen(st->ca_file, "r");
        if (!f) {
            h->log(st->self, SOPHIA_LOG_ERROR, "ca_file %s: cannot be read",
                   st->ca_file);
            return SOPHIA_EINVAL;
        }
        fclose(f);
    }
    if (https && st->insecure)
        h->log(st->self, SOPHIA_LOG_WARN,
               "tls_verify: false: the certificate of %s is not checked "
               "(anyone in the path can read and alter the batches); for "
               "testing only", st->url);
    return SOPHIA_OK;
}

static int wh_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    if (host->abi_major != SOPHIA_SDK_VERSION_MAJOR ||
        !SOPHIA_HOST_HAS(host, hmac_sha256_hex))
        return SOPHIA_EABI;
    wh_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->url = host->opt_string(opts, "url");
    st->timeout = host->opt_double(opts, "timeout");
    snprintf(st->sig_name, sizeof(st->sig_name), "%s",
             host->opt_string(opts, "signature_header"));
    const char *env = host->opt_string(opts, "secret_env");
    const char *secret = env && *env ? getenv(env) : NULL;
    if (env && *env && (!secret || !*secret)) {
        host->log(self, SOPHIA_LOG_ERROR, "secret_env %s is not set", env);
        wh_fini(st);
        return SOPHIA_EINVAL;
    }
    if (secret && !(st->secret = strdup(secret))) {
        wh_fini(st);
        return SOPHIA_ENOMEM;
    }
    size_t nh = host->opt_list_len(opts, "headers");
    if (nh > WH_MAX_HEADERS ||
        (strncmp(st->url, "http://", 7) && strncmp(st->url, "https://", 8))) {
        host->log(self, SOPHIA_LOG_ERROR, "%s",
                  nh > WH_MAX_HEADERS ? "more than 16 headers"
                                      : "url must start with http:// or https://");
        wh_fini(st);
        return SOPHIA_EINVAL;
    }
    if (wh_tls_init(st, opts) != SOPHIA_OK) {
        wh_fini(st);
        return SOPHIA_EINVAL;
    }
    for (size_t i = 0; i < nh; i++) {
        const char *h = host->opt_list_item(opts, "headers", i);
        if (!strchr(h, ':')) {
            host->log(self, SOPHIA_LOG_ERROR, "header '%s' has no ':'", h);
            wh_fini(st);
            return SOPHIA_EINVAL;
        }
        st->headers[st->nheaders++] = h;
    }
    if (output_batching_read(host, self, opts, &st->params) != SOPHIA_OK) {
        wh_fini(st);
        return SOPHIA_EINVAL;
    }
    *state = st;
    return SOPHIA_OK;
}

static void wh_params(void *state, sophia_output_params *p)
{
    output_batching_apply(&((const wh_state *)state)->params, p);
}

/* What an answer means for the batch (see the top of the file). */
static int wh_status_rc(int status)
{
    if (status >= 200 && status < 300)
        return SOPHIA_OK;
    if (status == 408 || status == 429 || status >= 500)
        return SOPHIA_EUNAVAIL;
    return status == 401 || status == 403 ? SOPHIA_EPERM : SOPHIA_EINVAL;
}

static void wh_answered(void *arg, int rc, int status, const char *body,
                        size_t len)
{
    wh_post *p = arg;
    const sophia_host *h = p->st->host;
    if (rc == SOPHIA_OK)
        rc = wh_status_rc(status);
    if (rc != SOPHIA_OK) /* status 0: the body, if any, says why */
        h->log(p->st->self, SOPHIA_LOG_WARN, "POST %s: %s (status %d)%s%.*s",
               p->st->url, h->strerror(rc), status,
               !status && body ? ": " : "", !status && body ? (int)len : 0,
               !status && body ? body : "");
    h->output_done(p->call, rc);
    free(p);
}

static void wh_deliver(void *state, const sophia_output_batch *b,
                       sophia_output_call *call)
{
    wh_state *st = state;
    const sophia_host *h = st->host;
    wh_post *p = calloc(1, sizeof(*p));
    if (!p) {
        h->output_done(call, SOPHIA_ENOMEM);
        return;
    }
    p->st = st;
    p->call = call;
    const char *hdr[WH_MAX_HEADERS + 4];
    size_t n = 0;
    for (size_t i = 0; i < st->nheaders; i++)
        hdr[n++] = st->headers[i];
    hdr[n++] = "Content-Type: application/json";
    if (st->secret) {
        char hex[65];
        h->hmac_sha256_hex(st->secret, strlen(st->secret), b->json,
                           b->json_len, hex);
        snprintf(p->sig, sizeof(p->sig), "%s: sha256=%s", st->sig_name, hex);
        hdr[n++] = p->sig;
    }
    hdr[n] = NULL;
    sophia_http_request req = {.struct_size = sizeof(req),
                               .method = "POST",
                               .url = st->url,
                               .headers = hdr,
                               .body = b->json,
                               .body_len = b->json_len,
                               .timeout_s = st->timeout,
                               .ca_file = st->ca_file,
                               .tls_insecure = st->insecure};
    int rc = h->http_request(st->self, &req, wh_answered, p);
    if (rc != SOPHIA_OK) {
        free(p);
        h->output_done(call, rc);
    }
}

static const sophia_output_ops wh_ops = {
    .struct_size = sizeof(sophia_output_ops),
    .deliver = wh_deliver,
    .params = wh_params,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "webhook",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_OUTPUT,
    .description = "POST processed events and alerts to a URL, HMAC-signed",
    .options = wh_options,
    .init = wh_init,
    .fini = wh_fini,
    .output = &wh_ops,
};
