/*
 * relay - a processor for the chain tests (streams.<name>.processors):
 * it passes each event on to the next link with host->emit (SDK 1.2),
 * changed so a test can see which links it went through and what state
 * each had when it did.
 *
 * Each emitted copy gets the instance's `mark` option appended to its
 * "hops" array and "seen_<mark>": the number of events this instance had
 * committed when it processed the copy (a counter moved with host->stage,
 * so a run that does not commit - a later link's RETRY - leaves it as it
 * was). Markers on the event: "drop_at": MARK returns DROP at that link;
 * "split_at": MARK with "split": K emits K copies, each with "part": i;
 * "flood_at": MARK emits 2,000 copies (over the chain's bound); "pass_at":
 * MARK emits nothing, so the event goes on as it came.
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct relay_state {
    const sophia_host *host;
    char mark[64];
    long committed;
} relay_state;

static int relay_init(const sophia_host *host, sophia_self *self,
                      const sophia_opts *opts, void **state)
{
    (void)self;
    const char *mark = host->opt_string(opts, "mark");
    if (!mark || strlen(mark) >= sizeof(((relay_state *)0)->mark))
        return SOPHIA_EINVAL;
    relay_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    strcpy(st->mark, mark);
    *state = st;
    return 0;
}

static void relay_fini(void *state)
{
    free(state);
}

static void committed_up(void *state, void *change)
{
    (void)change;
    ((relay_state *)state)->committed++;
}

static int at_me(const relay_state *st, const sophia_event *ev,
                 const char *marker)
{
    const char *s = st->host->json_string(st->host->json_get(ev->body, marker));
    return s && !strcmp(s, st->mark);
}

/* A copy of the event with this link's hop and counter (and part). */
static sophia_json *hop(const relay_state *st, const sophia_event *ev,
                        int part)
{
    const sophia_host *h = st->host;
    sophia_json *e = h->json_copy(ev->body);
    const sophia_json *was = h->json_get(ev->body, "hops");
    sophia_json *hops = was ? h->json_copy(was) : h->json_array();
    char key[80];
    h->json_append(hops, h->json_str(st->mark));
    h->json_set(e, "hops", hops);
    snprintf(key, sizeof(key), "seen_%s", st->mark);
    h->json_set(e, key, h->json_int(st->committed));
    if (part >= 0) {
        h->json_del(e, "split_at");
        h->json_set(e, "part", h->json_int(part));
    }
    return e;
}

static sophia_verdict relay_process(void *state, const sophia_event *ev,
                                    sophia_ctx *ctx)
{
    relay_state *st = state;
    const sophia_host *h = st->host;
    if (at_me(st, ev, "drop_at"))
        return SOPHIA_PROCESS_DROP;
    h->stage(ctx, committed_up, NULL, NULL);
    if (at_me(st, ev, "pass_at"))
        return SOPHIA_PROCESS_OK;
    int copies = 1, part = -1;
    if (at_me(st, ev, "split_at")) {
        copies = (int)h->json_number(h->json_get(ev->body, "split"), 1);
        part = 0;
    } else if (at_me(st, ev, "flood_at")) {
        copies = 2000;
    }
    for (int i = 0; i < copies; i++)
        if (h->emit(ctx, hop(st, ev, part < 0 ? -1 : i)) < 0)
            return SOPHIA_PROCESS_ERROR;
    return SOPHIA_PROCESS_OK;
}

static const sophia_option relay_options[] = {
    {"mark", SOPHIA_OPT_STRING, NULL, "this link's name in the hops"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops relay_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = relay_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "relay",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "passes events on down a chain, marking each hop",
    .options = relay_options,
    .init = relay_init,
    .fini = relay_fini,
    .processor = &relay_ops,
};
