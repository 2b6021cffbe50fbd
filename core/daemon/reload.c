/*
 * reload - see reload.h.
 *
 * Every new or changed plugin is first tried in a forked child
 * (plugin_probe.h) while the loop runs on: one that crashes or hangs in
 * init() fails the reload and never enters this process. Then two
 * phases. Prepare builds everything the new file asks for next to the
 * running state without touching it: the configuration is parsed and
 * validated, the new plugin set is loaded (ABI, options, init()), sharing
 * each instance whose module file and options are unchanged, and the
 * streams are built once on a probe base to check their bindings. Any
 * problem drops what was built and the old set keeps running.
 *
 * Commit is synchronous on the loop thread, so it is atomic with respect
 * to events: no event is processed while it runs. Streams keep their
 * queues and are pointed at their instances in the new set (queued events
 * simply wait for the new instance); streams gone from the file are
 * drained through their old instance first; consolidators are pointed at
 * their new instances; processors and correlators (host/correlate.h)
 * being replaced hand their state over when both sides implement
 * export_state/import_state; then the old set
 * is retired (fini + close of what the new set does not share).
 *
 * server.tls's certificate and key are read again, and used for new
 * connections only once they load as a pair (http_tls.h); open ones keep
 * theirs. Things read once at start-up stay as they were: the listen
 * addresses (server.listen, and whether and where server.tls listens), the
 * cache tiers and write-strategy prefixes, the memory module's settings
 * but memory.embedder (it keeps a pointer into the configuration it was
 * started with, so that one is kept alive until exit; a new embedder is
 * re-embedded into in the background), and of a stream that stays its queue
 * size, dedup settings, `durable` and Redis/StatsD sources (its processor,
 * filter and batch size do change; a changed durable or queue_size is
 * logged as waiting for a restart). What is read at use time (ingest tokens, body
 * limits, server.hosts/origins/max_connections, WebSocket settings,
 * write-strategy instances by name) follows the new file at once.
 */
#include "daemon/reload.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "host/correlate.h"
#include "host/host.h"
#include "http/http.h"
#include "lib/log.h"
#include "lib/notify.h"
#include "memory/memory.h"
#include "lib/paths.h"
#include "plugin/plugin.h"
#include "plugin/plugin_probe.h"
#include "ingest/stream.h"
#include "ws/ws.h"

struct sophia_reloader {
    sophia_server *s;
    /* A reload whose new plugins are being tried in a child
     * (plugin_probe.h); a SIGHUP meanwhile is remembered and runs once
     * this one is over. */
    sophia_probe *probing;
    sophia_conf *probing_conf;
    int hup_again;
    int64_t probe_started_us;

    char *last_error;
    int64_t last_at;
    sophia_conf *kept_conf; /* the memory module's */

    /* Retired instances wait here while the host owes a plugin callback
     * (cache_get, memory_search): the callback may be theirs, and its
     * code must still be loaded when it runs. */
    sophia_plugin_set **retired;
    size_t nretired;
    struct event *retire_ev;
    /* One thread for the finis plugins let run off the loop
     * (SOPHIA_PLUGIN_FINI_OFF_LOOP), made at the first retirement. */
    sophia_workers *fini_pool;
    int stopping; /* sophia_reloader_free: no new pool */

    sophia_reload_swap_fn swap_fn;
    void *swap_arg;
};

#define RETIRE_POLL_MS 50

sophia_reloader *sophia_reloader_new(sophia_server *s)
{
    sophia_reloader *rl = calloc(1, sizeof(*rl));
    if (rl)
        rl->s = s;
    return rl;
}

static sophia_workers *fini_pool(sophia_reloader *rl)
{
    if (!rl->fini_pool && rl->s->loop && !rl->stopping)
        rl->fini_pool = sophia_workers_new(sophia_loop_base(rl->s->loop), 1,
                                           "retire", NULL, NULL);
    return rl->fini_pool; /* NULL: finis run on the loop */
}

static void retire_now(sophia_reloader *rl)
{
    for (size_t i = 0; i < rl->nretired; i++)
        sophia_plugin_set_free_off_loop(rl->retired[i], fini_pool(rl));
    free(rl->retired);
    rl->retired = NULL;
    rl->nretired = 0;
}

static void on_retire_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_reloader *rl = arg;
    if (sophia_host_callbacks_pending(rl->s->host_rt) == 0) {
        retire_now(rl);
        return;
    }
    struct timeval tv = {0, RETIRE_POLL_MS * 1000};
    evtimer_add(rl->retire_ev, &tv);
}

/* Moves what `old` holds that `next` does not into a set of its own, and
 * frees that now or once no plugin callback is pending. */
static void retire(sophia_reloader *rl, sophia_plugin_set *old,
                   const sophia_plugin_set *next)
{
    sophia_server *s = rl->s;
    size_t n = 0;
    for (size_t i = 0; i < old->count; i++)
        if (!sophia_plugin_set_has(next, old->items[i])) {
            sophia_host_release(old->items[i]); /* its timers: no more runs */
            old->items[n++] = old->items[i];
        }
    old->count = n;
    sophia_plugin_set **grown = NULL;
    if (sophia_host_callbacks_pending(rl->s->host_rt) == 0 || !s->loop ||
        !(grown = realloc(rl->retired,
                          (rl->nretired + 1) * sizeof(*rl->retired)))) {
        sophia_plugin_set_free_off_loop(old, fini_pool(rl));
        return;
    }
    rl->retired = grown;
    rl->retired[rl->nretired++] = old;
    if (!rl->retire_ev)
        rl->retire_ev = evtimer_new(sophia_loop_base(s->loop), on_retire_poll,
                                    rl);
    struct timeval tv = {0, RETIRE_POLL_MS * 1000};
    if (rl->retire_ev && !evtimer_pending(rl->retire_ev, NULL))
        evtimer_add(rl->retire_ev, &tv);
    sophia_info("reload", "msg=\"old plugins stay loaded until pending callbacks ran\" pending=%zu",
                sophia_host_callbacks_pending(rl->s->host_rt));
}

const char *sophia_reload_last_error(const sophia_reloader *rl)
{
    return rl ? rl->last_error : NULL;
}

int64_t sophia_reload_last_at(const sophia_reloader *rl)
{
    return rl ? rl->last_at : 0;
}

void sophia_reloader_free(sophia_reloader *rl)
{
    if (!rl)
        return;
    sophia_probe_cancel(rl->probing);
    sophia_conf_free(rl->probing_conf);
    /* Finis under way finish; queued ones, and what is still retired,
     * run here on the loop: the process is stopping anyway. */
    rl->stopping = 1;
    sophia_workers_free(rl->fini_pool);
    rl->fini_pool = NULL;
    retire_now(rl);
    if (rl->retire_ev)
        event_free(rl->retire_ev);
    sophia_conf_free(rl->kept_conf);
    free(rl->last_error);
    free(rl);
}

static void fail(sophia_reloader *rl, const sophia_diag *d)
{
    rl->s->reload_failures++;
    free(rl->last_error);
    rl->last_error = strdup(d->count ? d->lines[0] : "reload failed");
    for (size_t i = 0; i < d->count; i++) {
        char q[1100];
        sophia_error("reload", "msg=\"configuration rejected, keeping the running one\" problem=%s",
                     sophia_log_quote(d->lines[i], q, sizeof(q)));
    }
    /* The reload is over: systemd goes back from "reloading" to "active". */
    sophia_notify_ready("running; reload refused, the old configuration "
                        "stays: %s", rl->last_error ? rl->last_error : "?");
}

static int is_loopback(const char *host)
{
    return strcmp(host, "127.0.0.1") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0 || strcmp(host, "[::1]") == 0 ||
           strcmp(host, "localhost") == 0;
}

static void check_listener(const sophia_conf *c, const char *host,
                           const char *key, const char *listen, sophia_diag *d)
{
    if (is_loopback(host))
        return;
    if (!c->server.tokens || !*c->server.tokens)
        sophia_diag_add(d, c->file, 0, 0,
                        "%s %s is not loopback but no ingest tokens "
                        "are set (server.tokens.secret_env %s is empty)",
                        key, listen,
                        c->server.tokens_env ? c->server.tokens_env : "unset");
    if (!c->ws.auth_secret || !*c->ws.auth_secret)
        sophia_diag_add(d, c->file, 0, 0,
                        "%s %s is not loopback but WebSocket auth has "
                        "no secret (websocket.auth.secret_env)",
                        key, listen);
}

/* Secrets policy (SPEC §3): open endpoints only on loopback, on either
 * listener. */
void sophia_check_secrets(const sophia_conf *c, const char *host,
                          sophia_diag *d)
{
    check_listener(c, host, "server.listen", c->server.listen, d);
    char *tls_host = NULL;
    if (c->server.tls.listen &&
        sophia_conf_split_listen(c->server.tls.listen, &tls_host, NULL) == 0)
        check_listener(c, tls_host, "server.tls.listen", c->server.tls.listen, d);
    free(tls_host);
}

/* Builds the new set and checks the streams bind to it; NULL on error. */
static sophia_plugin_set *prepare(sophia_server *s, const sophia_conf *c,
                                  sophia_diag *d)
{
    sophia_plugin_set *next = sophia_plugin_set_load_next(
        c, s->conf, s->plugins, sophia_host_rt_table(s->host_rt), d);
    if (!next)
        return NULL;
    struct event_base *probe = event_base_new();
    if (!probe) {
        sophia_diag_add(d, c->file, 0, 0, "out of memory");
    } else {
        sophia_streams_free(sophia_streams_new(c, next, NULL, probe, d));
        event_base_free(probe);
        sophia_correlate_free(sophia_correlate_new(c, next, NULL, d));
    }
    sophia_memory_check_embedder(c, next, d);
    if (d->count) {
        sophia_plugin_set_retire(next, s->plugins); /* the fresh ones */
        return NULL;
    }
    return next;
}

/* A replaced processor's state goes to its successor when both can. */
static void hand_over(const sophia_plugin_set *old,
                      const sophia_plugin_set *next)
{
    for (size_t i = 0; i < next->count; i++) {
        sophia_instance *in = next->items[i];
        sophia_instance *was = sophia_plugin_set_find(old, in->name);
        if (!was || was == in || was->desc->kind != SOPHIA_KIND_PROCESSOR ||
            in->desc->kind != SOPHIA_KIND_PROCESSOR)
            continue;
        const sophia_processor_ops *a = was->desc->processor;
        const sophia_processor_ops *b = in->desc->processor;
        size_t need_a = offsetof(sophia_processor_ops, export_state) +
                        sizeof(a->export_state);
        size_t need_b = offsetof(sophia_processor_ops, import_state) +
                        sizeof(b->import_state);
        if (a->struct_size < need_a || b->struct_size < need_b ||
            !a->export_state || !b->import_state)
            continue;
        char *json = a->export_state(was->state);
        if (!json)
            continue;
        int rc = b->import_state(in->state, json);
        sophia_host_table()->free(json); /* the SDK's rule: host->free */
        if (rc)
            sophia_warn("reload", "msg=\"state hand-over refused; starting empty\" instance=%s rc=%d",
                        in->name, rc);
        else
            sophia_info("reload", "msg=\"state handed over\" instance=%s", in->name);
    }
}

void sophia_reload_on_swap(sophia_reloader *rl, sophia_reload_swap_fn fn,
                           void *arg)
{
    rl->swap_fn = fn;
    rl->swap_arg = arg;
}

static void commit(sophia_reloader *rl, sophia_conf *c,
                   sophia_plugin_set *next, sophia_diag *d)
{
    sophia_server *s = rl->s;
    sophia_plugin_set *old = s->plugins;
    sophia_streams_recall(s->streams, next); /* export committed state only */
    hand_over(old, next);
    sophia_streams_rebind(s->streams, c, next, sophia_loop_base(s->loop), d);
    /* After the streams' rebind: what a removed stream drains still
     * reaches the correlators it fed. */
    s->correlate = sophia_correlate_rebind(s->correlate, c, next,
                                           sophia_loop_base(s->loop));
    sophia_server_wire_correlate(s);
    sophia_memory_rebind(s->memory, next);
    sophia_memory_set_embedder(s->memory, c, next);
    sophia_cache_bind_plugins(s->cache, next);
    s->plugins = next;
    retire(rl, old, next);
    sophia_conf *was = s->conf;
    s->conf = c;
    if (rl->swap_fn) /* before `was` is freed */
        rl->swap_fn(rl->swap_arg, c, next);
    if (s->ws) /* websocket.* is copied by the router: re-read it */
        sophia_ws_reconfigure(s->ws, c);
    if (s->memory && sophia_memory_conf(s->memory) == was)
        rl->kept_conf = was;
    else
        sophia_conf_free(was);
}

/* Loads the new set in-process (the probe found nothing crashing) and
 * swaps it in, or counts a failure. Takes `c`. */
static int apply(sophia_reloader *rl, sophia_conf *c)
{
    sophia_server *s = rl->s;
    int64_t t0 = sophia_now_mono_us();
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_plugin_set *next = prepare(s, c, &d);
    char why[1024];
    if (next && sophia_http_reload_tls(s->http, c, why, sizeof(why)) < 0) {
        sophia_diag_add(&d, c->file, 0, 0, "server.tls: %s; keeping the certificate in use", why);
        sophia_plugin_set_retire(next, s->plugins); /* the fresh ones */
        next = NULL;
    }
    if (!next) {
        if (!d.count)
            sophia_diag_add(&d, s->conf->file, 0, 0, "reload failed");
        fail(rl, &d);
        sophia_conf_free(c);
        sophia_diag_free(&d);
        return -1;
    }
    int64_t t1 = sophia_now_mono_us();
    commit(rl, c, next, &d);
    s->reloads++; /* last_error stays: it tells about the last failure */
    sophia_info("reload", "msg=\"configuration applied\" file=%s plugins=%zu streams=%zu prepare_us=%lld commit_us=%lld",
                s->conf->file, s->plugins->count, sophia_streams_count(s->streams),
                (long long)(t1 - t0), (long long)(sophia_now_mono_us() - t1));
    sophia_notify_ready("running on %s:%d; configuration reloaded (%zu plugins, "
                        "%zu streams, reload #%llu)", s->host, s->port,
                        s->plugins->count, sophia_streams_count(s->streams),
                        (unsigned long long)s->reloads);
    sophia_diag_free(&d);
    return 0;
}

static void on_probed(const sophia_diag *d, void *arg)
{
    sophia_reloader *rl = arg;
    sophia_server *s = rl->s;
    sophia_conf *c = rl->probing_conf;
    rl->probing = NULL;
    rl->probing_conf = NULL;
    sophia_info("reload", "msg=\"new plugins tried in a child\" problems=%zu probe_us=%lld",
                d->count, (long long)(sophia_now_mono_us() - rl->probe_started_us));
    if (s->shutting_down) {
        sophia_conf_free(c);
    } else if (d->count) {
        fail(rl, d);
        sophia_conf_free(c);
    } else {
        apply(rl, c);
    }
    if (rl->hup_again && !s->shutting_down) {
        rl->hup_again = 0;
        sophia_reload(rl);
    }
}

int sophia_reload(sophia_reloader *rl)
{
    sophia_server *s = rl->s;
    if (rl->probing) {
        rl->hup_again = 1;
        return 0;
    }
    sophia_notify_reloading(); /* READY=1 again in apply() or fail() */
    rl->last_at = sophia_now_wall_us();
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf *c = sophia_conf_load_with(s->conf->file, &s->load_opts, &d);
    if (c) {
        sophia_conf_apply_env(c, NULL);
        sophia_conf_add_plugin_dir(c, sophia_paths_plugin_dir());
        sophia_conf_validate(c, &d);
        sophia_check_secrets(c, s->host, &d);
    }
    if (!c || d.count) {
        if (!d.count)
            sophia_diag_add(&d, s->conf->file, 0, 0, "reload failed");
        fail(rl, &d);
        sophia_conf_free(c);
        sophia_diag_free(&d);
        return -1;
    }
    sophia_diag_free(&d);
    /* New and changed plugins are tried in a child first, off the loop. */
    rl->probing_conf = c;
    rl->probe_started_us = sophia_now_mono_us();
    rl->probing = s->loop ? sophia_plugin_probe_start(c, s->conf, s->plugins,
                                                      sophia_host_rt_table(s->host_rt),
                                                      sophia_loop_base(s->loop),
                                                      on_probed, rl)
                          : NULL;
    if (rl->probing)
        return 0;
    rl->probing_conf = NULL;
    return apply(rl, c);
}
