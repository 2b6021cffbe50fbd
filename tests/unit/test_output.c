/*
 * output - the host's output runner (host/output.h) with a fake output
 * plugin on a real event base: batches are cut by count and by bytes, one
 * deliver() at a time in order by default, up to max_inflight when the
 * plugin raises it (each slot held by its batch through its retries), a
 * failed batch comes back whole after its back-off, a refusal for good
 * ends its records with the error, releasing the instance ends whatever
 * is left, and alerts raised outside an event are bounded. Also the HMAC the host
 * signs with (host->hmac_sha256_hex), against RFC 4231.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <jansson.h>
#include <string.h>

#include "host/host.h"
#include "host/output.h"

#define MAX_CALLS 16

typedef struct fake {
    sophia_output_call *call; /* the deliver() in progress (the last one) */
    sophia_output_call *calls[MAX_CALLS];
    size_t busy, max_inflight; /* 0: the host's default */
    size_t counts[MAX_CALLS];
    unsigned attempts[MAX_CALLS];
    char *texts[MAX_CALLS];
    size_t ncalls;
    size_t batch, batch_bytes;
} fake;

static void fake_deliver(void *state, const sophia_output_batch *b,
                         sophia_output_call *call)
{
    fake *f = state;
    assert_true(f->busy < (f->max_inflight ? f->max_inflight : 1));
    f->busy++;
    assert_true(f->ncalls < MAX_CALLS);
    assert_int_equal(json_array_size((const json_t *)b->records), b->count);
    assert_int_equal(strlen(b->json), b->json_len);
    f->counts[f->ncalls] = b->count;
    f->attempts[f->ncalls] = b->attempt;
    f->calls[f->ncalls] = call;
    f->texts[f->ncalls++] = strdup(b->json);
    f->call = call;
}

static void fake_params(void *state, sophia_output_params *p)
{
    fake *f = state;
    p->batch = f->batch;
    p->batch_bytes = f->batch_bytes;
    p->flush_interval = 0; /* go as soon as nothing is in progress */
    p->retry_base = 0.001;
    p->retry_cap = 0.002;
    if (f->max_inflight)
        p->max_inflight = f->max_inflight;
}

static const sophia_output_ops fake_ops = {
    .struct_size = sizeof(sophia_output_ops),
    .deliver = fake_deliver,
    .params = fake_params,
};

static const sophia_plugin fake_desc = {
    SOPHIA_PLUGIN_HEADER,
    .name = "fake",
    .version = "0",
    .kind = SOPHIA_KIND_OUTPUT,
    .output = &fake_ops,
};

typedef struct env {
    sophia_host_rt *rt;
    struct event_base *base;
    struct sophia_self self;
    fake f;
    int rcs[64]; /* each record's report, -100 = none yet */
    size_t order[64], nreported;
} env;

static env E;

static void on_done(void *arg, int rc)
{
    size_t i = (size_t)(uintptr_t)arg;
    assert_int_equal(E.rcs[i], -100); /* once */
    E.rcs[i] = rc;
    E.order[E.nreported++] = i;
}

static sophia_output *setup_env(size_t batch, size_t bytes)
{
    memset(&E, 0, sizeof(E));
    for (size_t i = 0; i < 64; i++)
        E.rcs[i] = -100;
    E.rt = sophia_host_rt_new();
    E.base = event_base_new();
    sophia_host_timers_bind(E.rt, E.base);
    E.f.batch = batch;
    E.f.batch_bytes = bytes;
    E.self = (struct sophia_self){.name = "out", .desc = &fake_desc,
                                  .state = &E.f,
                                  .host = sophia_host_rt_table(E.rt)};
    sophia_output *o = sophia_host_output(&E.self);
    assert_non_null(o);
    assert_ptr_equal(sophia_host_output(&E.self), o); /* one per instance */
    return o;
}

static void teardown_env(void)
{
    sophia_host_release(&E.self);
    for (size_t i = 0; i < E.f.ncalls; i++)
        free(E.f.texts[i]);
    sophia_host_timers_bind(E.rt, NULL);
    sophia_host_rt_free(E.rt);
    event_base_free(E.base);
}

static void submit(sophia_output *o, size_t i)
{
    sophia_output_submit(o, json_pack("{s:i}", "n", (int)i), on_done,
                         (void *)(uintptr_t)i);
}

/* Ends the deliver() in progress with rc. */
static void finish(int rc)
{
    sophia_output_call *c = E.f.call;
    assert_non_null(c);
    E.f.call = NULL;
    E.f.busy--;
    sophia_host_output_done(c, rc);
}

/* Ends the i-th deliver() with rc, whichever is in progress. */
static void finish_at(size_t i, int rc)
{
    assert_non_null(E.f.calls[i]);
    sophia_output_call *c = E.f.calls[i];
    E.f.calls[i] = NULL;
    if (E.f.call == c)
        E.f.call = NULL;
    E.f.busy--;
    sophia_host_output_done(c, rc);
}

static json_t *stat_of(const char *name)
{
    json_t *st = sophia_host_outputs_stats_json(E.rt);
    json_t *v = json_incref(json_object_get(json_object_get(st, "out"), name));
    json_decref(st);
    return v;
}

static json_int_t stat_int(const char *name)
{
    json_t *v = stat_of(name);
    json_int_t n = json_integer_value(v);
    json_decref(v);
    return n;
}

/* Three slots: batches overlap, report in any order, and one that fails
 * keeps its slot through its back-off, then goes again unchanged. */
static void test_inflight_overlap_and_retry(void **unused)
{
    (void)unused;
    sophia_output *o = setup_env(2, 1 << 20);
    E.f.max_inflight = 3;
    sophia_host_release(&E.self); /* params() again, with 3 */
    o = sophia_host_output(&E.self);
    for (size_t i = 0; i < 7; i++)
        submit(o, i);
    /* 0, 1 and 2 went alone as each slot was free; 3..6 wait */
    assert_int_equal(E.f.ncalls, 3);
    assert_int_equal(E.f.busy, 3);
    assert_int_equal(stat_int("inflight"), 3);
    assert_int_equal(stat_int("queued"), 4);
    finish_at(2, 0); /* the youngest first: its record reports first */
    assert_int_equal(E.nreported, 1);
    assert_int_equal(E.order[0], 2);
    assert_int_equal(E.f.ncalls, 4); /* its slot took 3 and 4 */
    assert_string_equal(E.f.texts[3], "[{\"n\":3},{\"n\":4}]");
    finish_at(0, SOPHIA_EUNAVAIL); /* keeps its slot while it waits */
    assert_int_equal(E.f.ncalls, 4);
    assert_int_equal(stat_int("inflight"), 3);
    finish_at(1, 0);
    assert_int_equal(E.f.ncalls, 5); /* 5 and 6 */
    event_base_loop(E.base, EVLOOP_ONCE); /* the back-off ends */
    assert_int_equal(E.f.ncalls, 6);
    assert_int_equal(E.f.attempts[5], 1);
    assert_string_equal(E.f.texts[5], E.f.texts[0]);
    assert_int_equal(stat_int("attempt"), 1);
    finish_at(3, 0);
    finish_at(4, 0);
    finish_at(5, 0);
    assert_int_equal(E.nreported, 7);
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(E.rcs[i], 0);
    assert_int_equal(E.order[6], 0); /* the retried one came last */
    assert_int_equal(stat_int("inflight"), 0);
    assert_int_equal(stat_int("delivered"), 7);
    teardown_env();
}

/* An alert raised outside an event: delivered like the rest, nobody told;
 * past SOPHIA_OUTPUT_DETACHED_MAX waiting, dropped and counted. */
static void test_detached_bounded(void **unused)
{
    (void)unused;
    sophia_output *o = setup_env(100, 1 << 20);
    assert_int_equal(sophia_output_submit_detached(
                         o, json_pack("{s:s}", "type", "alert")), 0);
    assert_int_equal(E.f.ncalls, 1); /* out at once; holds the only slot */
    for (size_t i = 0; i < SOPHIA_OUTPUT_DETACHED_MAX; i++)
        assert_int_equal(sophia_output_submit_detached(o, json_integer(1)), 0);
    assert_int_equal(sophia_output_submit_detached(o, json_integer(2)),
                     SOPHIA_EBUSY);
    submit(o, 0); /* an event's record is never dropped */
    assert_int_equal(stat_int("dropped"), 1);
    assert_int_equal(stat_int("queued"), SOPHIA_OUTPUT_DETACHED_MAX + 1);
    finish(0);
    assert_int_equal(E.f.counts[1], 100);
    finish(0); /* a slot freed: the bound counts waiting ones only */
    assert_int_equal(sophia_output_submit_detached(o, json_integer(3)), 0);
    assert_int_equal(E.nreported, 0);
    teardown_env();
}

static void test_batches_by_count_in_order(void **unused)
{
    (void)unused;
    sophia_output *o = setup_env(3, 1 << 20);
    for (size_t i = 0; i < 7; i++)
        submit(o, i);
    /* the first went alone (nothing was in progress), the rest waited */
    assert_int_equal(E.f.ncalls, 1);
    assert_int_equal(E.f.counts[0], 1);
    finish(0);
    finish(0);
    finish(0);
    assert_null(E.f.call);
    assert_int_equal(E.f.ncalls, 3);
    assert_int_equal(E.f.counts[1], 3);
    assert_int_equal(E.f.counts[2], 3);
    assert_int_equal(E.nreported, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(E.rcs[i], 0);
        assert_int_equal(E.order[i], i);
    }
    assert_string_equal(E.f.texts[1], "[{\"n\":1},{\"n\":2},{\"n\":3}]");
    teardown_env();
}

static void test_batches_by_bytes(void **unused)
{
    (void)unused;
    /* {"n":1} is 7 bytes: two fit in 15, a third does not */
    sophia_output *o = setup_env(100, 15);
    for (size_t i = 0; i < 6; i++)
        submit(o, i);
    while (E.f.call)
        finish(0);
    assert_int_equal(E.f.ncalls, 4); /* 1, then 2, 2, 1 */
    assert_int_equal(E.f.counts[1], 2);
    assert_int_equal(E.f.counts[2], 2);
    assert_int_equal(E.f.counts[3], 1);
    teardown_env();
}

static void test_retry_same_batch_then_refusal(void **unused)
{
    (void)unused;
    sophia_output *o = setup_env(10, 1 << 20);
    submit(o, 0); /* goes alone: nothing was in progress */
    submit(o, 1);
    finish(SOPHIA_EUNAVAIL); /* transient: again after the back-off */
    assert_null(E.f.call);
    assert_int_equal(E.nreported, 0);
    event_base_loop(E.base, EVLOOP_ONCE);
    assert_non_null(E.f.call);
    assert_int_equal(E.f.ncalls, 2);
    assert_int_equal(E.f.attempts[1], 1);
    assert_string_equal(E.f.texts[0], E.f.texts[1]); /* the same batch */
    submit(o, 2);                  /* waits behind the retried batch */
    finish(SOPHIA_ETIMEDOUT);
    event_base_loop(E.base, EVLOOP_ONCE);
    finish(0);
    assert_int_equal(E.rcs[0], 0);
    assert_int_equal(E.nreported, 1);
    assert_int_equal(E.f.counts[3], 2); /* then 1 and 2 together */
    finish(SOPHIA_EINVAL); /* refused for good: its records end with it */
    assert_int_equal(E.rcs[1], SOPHIA_EINVAL);
    assert_int_equal(E.rcs[2], SOPHIA_EINVAL);
    json_t *st = sophia_host_outputs_stats_json(E.rt);
    json_t *me = json_object_get(st, "out");
    assert_int_equal(json_integer_value(json_object_get(me, "retries")), 2);
    assert_int_equal(json_integer_value(json_object_get(me, "failed")), 2);
    assert_int_equal(json_integer_value(json_object_get(me, "delivered")), 1);
    json_decref(st);
    teardown_env();
}

static void test_release_ends_everything(void **unused)
{
    (void)unused;
    sophia_output *o = setup_env(10, 1 << 20);
    submit(o, 0);
    submit(o, 1);
    sophia_output_call *late = E.f.call; /* still with the plugin */
    E.f.call = NULL;
    sophia_host_release(&E.self);
    assert_int_equal(E.rcs[0], SOPHIA_EUNAVAIL);
    assert_int_equal(E.rcs[1], SOPHIA_EUNAVAIL);
    sophia_host_output_done(late, 0); /* reports into nothing */
    assert_int_equal(E.nreported, 2);
    teardown_env();
}

/* RFC 4231 test cases 1 and 2. */
static void test_hmac_sha256(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    char hex[65];
    assert_int_equal(h->hmac_sha256_hex("Jefe", 4,
                                        "what do ya want for nothing?", 28,
                                        hex),
                     0);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c7"
                             "5a003f089d2739839dec58b964ec3843");
    unsigned char key[20];
    memset(key, 0x0b, sizeof(key));
    assert_int_equal(h->hmac_sha256_hex(key, sizeof(key), "Hi There", 8, hex),
                     0);
    assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b"
                             "881dc200c9833da726e9376c2e32cff7");
    assert_int_equal(h->hmac_sha256_hex(NULL, 3, "x", 1, hex), SOPHIA_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batches_by_count_in_order),
        cmocka_unit_test(test_batches_by_bytes),
        cmocka_unit_test(test_retry_same_batch_then_refusal),
        cmocka_unit_test(test_release_ends_everything),
        cmocka_unit_test(test_inflight_overlap_and_retry),
        cmocka_unit_test(test_detached_bounded),
        cmocka_unit_test(test_hmac_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
