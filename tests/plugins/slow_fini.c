/*
 * slow_fini - a processor whose fini a test can hold, for the reload test
 * of SOPHIA_PLUGIN_FINI_OFF_LOOP (tests/integration/reload_fini.test.mjs).
 * fini writes `<dir>/fini-<tag>` naming the thread it runs on ("loop" on
 * the process's main thread, else "worker") and, with `hold: true`, waits
 * (up to 30 s) for `<dir>/release-<tag>` to appear before it returns, so
 * the test can check the daemon answers while a retired instance's fini
 * is still running.
 */
#define _GNU_SOURCE
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct sf_state {
    char dir[400], tag[64];
    int hold;
} sf_state;

static int sf_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    (void)self;
    const char *dir = host->opt_string(opts, "dir");
    const char *tag = host->opt_string(opts, "tag");
    sf_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    if (!dir || !tag || strlen(dir) >= sizeof(st->dir) ||
        strlen(tag) >= sizeof(st->tag)) {
        free(st);
        return SOPHIA_EINVAL;
    }
    strcpy(st->dir, dir);
    strcpy(st->tag, tag);
    st->hold = host->opt_bool(opts, "hold");
    *state = st;
    return SOPHIA_OK;
}

static void sf_fini(void *state)
{
    sf_state *st = state;
    char path[512];
    snprintf(path, sizeof(path), "%s/fini-%s", st->dir, st->tag);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(gettid() == getpid() ? "loop\n" : "worker\n", f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/release-%s", st->dir, st->tag);
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; st->hold && i < 3000 && access(path, F_OK) != 0; i++)
        nanosleep(&tick, NULL);
    free(st);
}

static sophia_verdict sf_process(void *state, const sophia_event *ev,
                                 sophia_ctx *ctx)
{
    (void)state;
    (void)ev;
    (void)ctx;
    return SOPHIA_PROCESS_OK;
}

static const sophia_option sf_options[] = {
    {"dir", SOPHIA_OPT_STRING, NULL, "where fini writes and waits"},
    {"tag", SOPHIA_OPT_STRING, NULL, "names this instance's files"},
    {"hold", SOPHIA_OPT_BOOL, "false", "fini waits for release-<tag>"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops sf_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = sf_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "slow_fini",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "a processor whose fini can be held (reload tests)",
    .options = sf_options,
    .init = sf_init,
    .fini = sf_fini,
    .processor = &sf_ops,
    .flags = SOPHIA_PLUGIN_FINI_OFF_LOOP,
};
