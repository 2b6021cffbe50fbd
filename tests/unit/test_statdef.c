/*
 * test_statdef - one declaration per figure: the HTTP table written as
 * /api/stats JSON and as /metrics text is byte for byte what the two
 * hand-written serializers it replaced produced (kept below as the
 * reference), with and without outer labels, for distinct values so a
 * swapped offset shows; then each kind of field, the /metrics scale and
 * format, and a labelled family over rows, as exact text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"
#include "ingest/stream.h"
#include "lib/statdef.h"


static const sophia_http_stats H = {
    .connections = 4, .connections_refused = 5, .body_bytes = 6,
    .refused = 3, .upgrades = 7, .requests = 1, .errors = 2,
    .tls_handshakes_ok = 8, .tls_handshakes_failed = 9};

/* The /api/stats "http" object as api.c built it by hand. */
static json_t *old_json(const sophia_http_stats *h)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "requests",
                     (json_int_t)h->requests, "errors", (json_int_t)h->errors,
                     "refused", (json_int_t)h->refused, "connections",
                     (json_int_t)h->connections, "connections_refused",
                     (json_int_t)h->connections_refused, "body_bytes",
                     (json_int_t)h->body_bytes, "upgrades", (json_int_t)h->upgrades,
                     "tls_handshakes_ok", (json_int_t)h->tls_handshakes_ok,
                     "tls_handshakes_failed", (json_int_t)h->tls_handshakes_failed);
}

/* The sophia_http_* lines of /metrics as api.c wrote them by hand. */
static const char OLD_PROM[] =
    "# HELP sophia_http_requests_total HTTP requests answered.\n"
    "# TYPE sophia_http_requests_total counter\n"
    "sophia_http_requests_total 1\n"
    "# HELP sophia_http_errors_total HTTP requests answered 4xx or 5xx.\n"
    "# TYPE sophia_http_errors_total counter\n"
    "sophia_http_errors_total 2\n"
    "# HELP sophia_http_refused_total HTTP requests refused from their head, "
    "before any body byte was read.\n"
    "# TYPE sophia_http_refused_total counter\n"
    "sophia_http_refused_total 3\n"
    "# HELP sophia_http_connections Open HTTP connections (WebSockets not included).\n"
    "# TYPE sophia_http_connections gauge\n"
    "sophia_http_connections 4\n"
    "# HELP sophia_http_connections_refused_total Connections refused over "
    "server.max_connections.\n"
    "# TYPE sophia_http_connections_refused_total counter\n"
    "sophia_http_connections_refused_total 5\n"
    "# HELP sophia_http_body_bytes Request body bytes buffered right now "
    "(bounded by server.max_body_total).\n"
    "# TYPE sophia_http_body_bytes gauge\n"
    "sophia_http_body_bytes 6\n"
    "# HELP sophia_http_tls_handshakes_total server.tls connections whose "
    "handshake completed (ok) or that closed before (failed).\n"
    "# TYPE sophia_http_tls_handshakes_total counter\n"
    "sophia_http_tls_handshakes_total{result=\"ok\"} 8\n"
    "sophia_http_tls_handshakes_total{result=\"failed\"} 9\n";

static char *prom(const sophia_statdef *d, size_t n, const void *st,
                  const char *labels)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sophia_statdef_prom(f, d, n, st, labels);
    fclose(f);
    return buf;
}

static void test_http_json_unchanged(void **u)
{
    (void)u;
    json_t *a = old_json(&H);
    json_t *b = sophia_statdef_json(sophia_http_statdefs, sophia_http_nstatdefs, &H);
    char *sa = json_dumps(a, JSON_COMPACT), *sb = json_dumps(b, JSON_COMPACT);
    assert_string_equal(sa, sb); /* same keys, values and order */
    free(sa);
    free(sb);
    json_decref(a);
    json_decref(b);
}

static void test_http_prom_unchanged(void **u)
{
    (void)u;
    char *p = prom(sophia_http_statdefs, sophia_http_nstatdefs, &H, NULL);
    assert_string_equal(p, OLD_PROM);
    free(p);
}

static void test_outer_labels(void **u)
{
    (void)u;
    typedef struct { uint64_t a, b, c; } S;
    static const sophia_statdef d[] = {
        SOPHIA_STATDEF("a", "x_total", "counter", NULL, "A.", offsetof(S, a)),
        SOPHIA_STATDEF("b", "y_total", "counter", "k=\"1\"", "B.", offsetof(S, b)),
        SOPHIA_STATDEF("c", "y_total", "counter", "k=\"2\"", NULL, offsetof(S, c)),
    };
    S s = {10, 20, 30};
    char *p = prom(d, 3, &s, "stream=\"s\"");
    assert_string_equal(p, "# HELP x_total A.\n# TYPE x_total counter\n"
                           "x_total{stream=\"s\"} 10\n"
                           "# HELP y_total B.\n# TYPE y_total counter\n"
                           "y_total{stream=\"s\",k=\"1\"} 20\n"
                           "y_total{stream=\"s\",k=\"2\"} 30\n");
    free(p);
}


/* One field of each kind, distinct values, negative where it may be. */
typedef struct kinds {
    uint64_t u;
    size_t z;
    int64_t i;
    double d;
    int b;
    uint64_t us;
} kinds;

#define K(f) offsetof(kinds, f)
static const sophia_statdef KDEFS[] = {
    SOPHIA_STATDEF("u", "k_u_total", "counter", NULL, "U.", K(u)),
    SOPHIA_STATDEF("z", "k_z", "gauge", NULL, "Z.", K(z), .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("i", "k_i", "gauge", NULL, "I.", K(i), .kind = SOPHIA_STAT_I64),
    SOPHIA_STATDEF("d", "k_d", "gauge", NULL, "D.", K(d), .kind = SOPHIA_STAT_DOUBLE,
                   .fmt = "%.3f"),
    SOPHIA_STATDEF("b", "k_b", "gauge", NULL, "B.", K(b), .kind = SOPHIA_STAT_BOOL),
    SOPHIA_STATDEF("us_p50", "k_seconds", "gauge", "q=\"0.5\"", "S.", K(us),
                   .scale = 1e-6, .fmt = "%.6f"),
    SOPHIA_STATDEF("hidden", NULL, NULL, NULL, NULL, K(u)),
};
#define NK (sizeof(KDEFS) / sizeof(KDEFS[0]))

static void test_kinds_json(void **u)
{
    (void)u;
    kinds k = {9007199254740993ull, 7, -3, 2.5, 1, 1500000};
    json_t *o = sophia_statdef_json(KDEFS, NK, &k);
    char *s = json_dumps(o, JSON_COMPACT);
    /* Integers stay exact (2^53 + 1 is not a double), the real is a real,
     * the flag a boolean; scale and format are /metrics only. */
    assert_string_equal(s, "{\"u\":9007199254740993,\"z\":7,\"i\":-3,"
                           "\"d\":2.5,\"b\":true,\"us_p50\":1500000,"
                           "\"hidden\":9007199254740993}");
    free(s);
    json_decref(o);
}

static void test_kinds_prom(void **u)
{
    (void)u;
    kinds k = {18446744073709551615ull, 7, -3, 2.5, 0, 1500000};
    char *p = prom(KDEFS, NK, &k, NULL);
    assert_string_equal(p, "# HELP k_u_total U.\n# TYPE k_u_total counter\n"
                           "k_u_total 18446744073709551615\n"
                           "# HELP k_z Z.\n# TYPE k_z gauge\nk_z 7\n"
                           "# HELP k_i I.\n# TYPE k_i gauge\nk_i -3\n"
                           "# HELP k_d D.\n# TYPE k_d gauge\nk_d 2.500\n"
                           "# HELP k_b B.\n# TYPE k_b gauge\nk_b 0\n"
                           "# HELP k_seconds S.\n# TYPE k_seconds gauge\n"
                           "k_seconds{q=\"0.5\"} 1.500000\n");
    free(p);
}

/* Per-row structs, as a module keeps one per stream or tier. */
typedef struct tier {
    uint64_t hits, entries;
    double p50, p99;
} tier;

#define T(f) offsetof(tier, f)
static const sophia_statdef TDEFS[] = {
    SOPHIA_STATDEF("hits", "t_hits_total", "counter", NULL, "Hits.", T(hits)),
    SOPHIA_STATDEF("entries", "t_entries", "gauge", NULL, "Entries (first row only).",
     T(entries), .only = 1u),
    SOPHIA_STATDEF("p50", "t_lat", "summary", "quantile=\"0.5\"", "Latency.", T(p50),
     .kind = SOPHIA_STAT_DOUBLE, .fmt = "%.6g"),
    SOPHIA_STATDEF("p99", "t_lat", "summary", "quantile=\"0.99\"", NULL, T(p99),
     .kind = SOPHIA_STAT_DOUBLE, .fmt = "%.6g"),
};
#define NT (sizeof(TDEFS) / sizeof(TDEFS[0]))

static void test_family(void **u)
{
    (void)u;
    tier a = {1, 2, 3.5, 4}, b = {5, 6, 7, 8.25};
    const char *const va[] = {"l1", "x"}, *const vb[] = {"l\"2", "y\\z\n"};
    const char *const names[] = {"tier", "node"};
    const sophia_stat_row rows[] = {{va, &a}, {vb, &b}};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sophia_statdef_prom_family(f, TDEFS, NT, names, 2, rows, 2);
    fclose(f);
    assert_string_equal(
        buf, "# HELP t_hits_total Hits.\n# TYPE t_hits_total counter\n"
             "t_hits_total{tier=\"l1\",node=\"x\"} 1\n"
             "t_hits_total{tier=\"l\\\"2\",node=\"y\\\\z\\n\"} 5\n"
             "# HELP t_entries Entries (first row only).\n"
             "# TYPE t_entries gauge\n"
             "t_entries{tier=\"l1\",node=\"x\"} 2\n"
             "# HELP t_lat Latency.\n# TYPE t_lat summary\n"
             "t_lat{tier=\"l1\",node=\"x\",quantile=\"0.5\"} 3.5\n"
             "t_lat{tier=\"l1\",node=\"x\",quantile=\"0.99\"} 4\n"
             "t_lat{tier=\"l\\\"2\",node=\"y\\\\z\\n\",quantile=\"0.5\"} 7\n"
             "t_lat{tier=\"l\\\"2\",node=\"y\\\\z\\n\",quantile=\"0.99\"} 8.25\n");
    free(buf);
    /* Each row's JSON has the figures its `only` gives it. */
    json_t *ja = sophia_statdef_json_row(TDEFS, NT, &a, 0);
    json_t *jb = sophia_statdef_json_row(TDEFS, NT, &b, 1);
    char *sa = json_dumps(ja, JSON_COMPACT), *sb = json_dumps(jb, JSON_COMPACT);
    assert_string_equal(sa, "{\"hits\":1,\"entries\":2,\"p50\":3.5,\"p99\":4.0}");
    assert_string_equal(sb, "{\"hits\":5,\"p50\":7.0,\"p99\":8.25}");
    free(sa);
    free(sb);
    json_decref(ja);
    json_decref(jb);
}

/* No rows: the heads alone; no type: samples without a head. */
static void test_family_edges(void **u)
{
    (void)u;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sophia_statdef_prom_family(f, TDEFS, 1, NULL, 0, NULL, 0);
    double v = 0.1;
    const sophia_statdef dyn = SOPHIA_STATDEF(NULL, "p_x_total", NULL, NULL,
                                              NULL, 0, .kind = SOPHIA_STAT_DOUBLE);
    const char *const inst[] = {"a"};
    const char *const names[] = {"instance"};
    const sophia_stat_row row = {inst, &v};
    sophia_statdef_prom_family(f, &dyn, 1, names, 1, &row, 1);
    fclose(f);
    assert_string_equal(buf, "# HELP t_hits_total Hits.\n"
                             "# TYPE t_hits_total counter\n"
                             "p_x_total{instance=\"a\"} 0.10000000000000001\n");
    free(buf);
}

/* ------------------------------------------------ the streams' table */

/* The sophia_stream_* lines as api.c's prom_streams wrote them by hand
 * (the reference the table replaced), for named stats structs. */
static void old_prom_streams(FILE *f, const char *const *names,
                             const sophia_stream_stats *st, size_t n)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } m[] = {
        {"sophia_stream_events_received_total", "Events accepted into the stream queue.",
         offsetof(sophia_stream_stats, received)},
        {"sophia_stream_events_processed_total", "Events processed with their actions applied.",
         offsetof(sophia_stream_stats, processed)},
        {"sophia_stream_events_dropped_total", "Events the processor dropped.",
         offsetof(sophia_stream_stats, dropped)},
        {"sophia_stream_events_failed_total", "Events that failed processing.",
         offsetof(sophia_stream_stats, failed)},
        {"sophia_stream_events_rejected_total", "Events refused because the queue was full.",
         offsetof(sophia_stream_stats, rejected)},
        /* added since the table replaced these lines */
        {"sophia_stream_requests_refused_early_total",
         "Requests refused at their head, the queue full before their body was read "
         "(their events are not in rejected).",
         offsetof(sophia_stream_stats, refused_early)},
        {"sophia_stream_events_filtered_total", "Events the stream's filter left out.",
         offsetof(sophia_stream_stats, filtered)},
        {"sophia_stream_events_duplicate_total", "Events skipped as duplicates inside the dedup window.",
         offsetof(sophia_stream_stats, duplicates)},
        {"sophia_stream_events_retried_total", "Deliveries that did not commit and will be tried again.",
         offsetof(sophia_stream_stats, retried)},
        {"sophia_stream_dead_letters_total", "Events sent to the stream's dead letter.",
         offsetof(sophia_stream_stats, dead)},
    };
#define HEAD(nm, ty, he) fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", nm, he, nm, ty)
    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
        HEAD(m[k].name, "counter", m[k].help);
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%s{stream=\"%s\"} %llu\n", m[k].name, names[i],
                    (unsigned long long)*(const uint64_t *)((const char *)&st[i] + m[k].off));
    }
    HEAD("sophia_stream_queue_depth", "gauge", "Events waiting in the stream queue.");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "sophia_stream_queue_depth{stream=\"%s\"} %zu\n", names[i], st[i].queued);
    HEAD("sophia_stream_inflight", "gauge", "Events whose effects are not durable yet.");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "sophia_stream_inflight{stream=\"%s\"} %zu\n", names[i], st[i].inflight);
    HEAD("sophia_stream_lag_seconds", "gauge", "Age of the oldest queued event.");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "sophia_stream_lag_seconds{stream=\"%s\"} %.6f\n", names[i],
                st[i].lag_ms / 1000.0);
    HEAD("sophia_stream_rate", "gauge", "Events processed per second (10 s average).");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "sophia_stream_rate{stream=\"%s\"} %.3f\n", names[i], st[i].rate);
#undef HEAD
}

/* The figures of api.c's hand-built stream object (without `sources` and
 * `dead_letters`, which are not figures). */
static json_t *old_stream_json(const sophia_stream_stats *s)
{
    json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:I}",
                          "received", (json_int_t)s->received, "processed",
                          (json_int_t)s->processed, "dropped", (json_int_t)s->dropped,
                          "failed", (json_int_t)s->failed, "retried",
                          (json_int_t)s->retried, "rejected", (json_int_t)s->rejected,
                          "queued", (json_int_t)s->queued, "capacity",
                          (json_int_t)s->capacity, "rate", s->rate, "lag_ms", s->lag_ms,
                          "filtered", (json_int_t)s->filtered, "duplicates",
                          (json_int_t)s->duplicates);
    json_object_update_new(o, json_pack("{s:I,s:f,s:I,s:I}", "inflight",
                                        (json_int_t)s->inflight, "retry_wait_ms",
                                        s->retry_wait_ms, "dead", (json_int_t)s->dead,
                                        "effect_failures", (json_int_t)s->effect_failures));
    json_object_set_new(o, "refused_early", json_integer((json_int_t)s->refused_early));
    return o;
}

/* Every field distinct, reals with digits the formats cut. */
static sophia_stream_stats stream_stats(uint64_t base)
{
    sophia_stream_stats s = {0};
    uint64_t *u = &s.received;
    for (size_t i = 0; i < 14; i++) /* received .. duplicates */
        u[i] = base + i;
    s.queued = (size_t)base + 20;
    s.inflight = (size_t)base + 21;
    s.capacity = (size_t)base + 22;
    s.retry_wait_ms = (double)base + 0.123456789;
    s.rate = (double)base + 1.23456;
    s.lag_ms = (double)base * 1000.0 + 1.2345678;
    return s;
}

static void test_streams_unchanged(void **u)
{
    (void)u;
    const char *const names[2] = {"metrics", "other"};
    const sophia_stream_stats st[2] = {stream_stats(100), stream_stats(7000)};
    char *want = NULL, *got = NULL;
    size_t wl = 0, gl = 0;
    FILE *f = open_memstream(&want, &wl);
    old_prom_streams(f, names, st, 2);
    fclose(f);
    const sophia_stat_row rows[2] = {{&names[0], &st[0]}, {&names[1], &st[1]}};
    static const char *const label[] = {"stream"};
    f = open_memstream(&got, &gl);
    sophia_statdef_prom_family(f, sophia_stream_statdefs, sophia_stream_nstatdefs,
                               label, 1, rows, 2);
    fclose(f);
    assert_string_equal(got, want);
    free(want);
    free(got);
    /* /api/stats: the same keys and values (key order follows the table). */
    for (int i = 0; i < 2; i++) {
        json_t *a = old_stream_json(&st[i]);
        json_t *b = sophia_statdef_json(sophia_stream_statdefs,
                                        sophia_stream_nstatdefs, &st[i]);
        assert_true(json_equal(a, b));
        json_decref(a);
        json_decref(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_json_unchanged),
        cmocka_unit_test(test_http_prom_unchanged),
        cmocka_unit_test(test_outer_labels),
        cmocka_unit_test(test_kinds_json),
        cmocka_unit_test(test_kinds_prom),
        cmocka_unit_test(test_family),
        cmocka_unit_test(test_family_edges),
        cmocka_unit_test(test_streams_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
