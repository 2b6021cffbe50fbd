/*
 * sophia/sdk.h - the one header a Sophia plugin includes.
 *
 * A plugin is a shared object that exports one data symbol,
 * `sophia_plugin_v1`, of type `sophia_plugin`. The host reads it, checks the
 * ABI, validates the plugin's YAML options against its option table, then
 * calls `init` with a table of host functions (`sophia_host`). Everything a
 * plugin may do to the outside world - cache, publish, alert, remember, log,
 * count - goes through that table; a plugin never talks to Redis,
 * PostgreSQL or sockets itself.
 *
 * Versioning (the SQLite rule): structs that cross the boundary start with
 * `struct_size` and only ever grow at their end; each appended member says
 * since which minor it exists. A host accepts a plugin whose ABI major equals
 * its own and whose minor is not newer than its own. A plugin calls a host
 * function added after the minor it requires only when
 * SOPHIA_HOST_HAS(host, member) says the host's table has it.
 *
 * Threading: every callback runs on the host's event-loop thread, one at a
 * time. Callbacks must not block; CPU-heavy work belongs to the host.
 *
 * Ownership: strings and JSON handed to a callback are borrowed for the
 * duration of that callback. JSON values a plugin creates are owned by the
 * plugin until it passes them to a host function documented as "takes".
 */
#ifndef SOPHIA_SDK_H
#define SOPHIA_SDK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SOPHIA_SDK_VERSION_MAJOR 1
#define SOPHIA_SDK_VERSION_MINOR 4

/* The symbol every plugin exports (a `const sophia_plugin`). */
#define SOPHIA_PLUGIN_SYMBOL "sophia_plugin_v1"

#if defined(__GNUC__)
#define SOPHIA_EXPORT __attribute__((visibility("default")))
#define SOPHIA_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SOPHIA_EXPORT
#define SOPHIA_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------ errors */

/* One error table for the SDK and the core: negative codes, a name each. */
#define SOPHIA_ERRNO_MAP(XX)                                                  \
    XX(EINVAL, -1, "invalid argument")                                        \
    XX(ENOMEM, -2, "out of memory")                                           \
    XX(ENOENT, -3, "not found")                                               \
    XX(EABI, -4, "incompatible plugin ABI")                                   \
    XX(EIO, -5, "I/O error")                                                  \
    XX(EBUSY, -6, "queue full")                                               \
    XX(ETIMEDOUT, -7, "timed out")                                            \
    XX(EUNAVAIL, -8, "service unavailable")                                   \
    XX(ETOOBIG, -9, "too large")                                              \
    XX(EPERM, -10, "not permitted")                                           \
    XX(EPARSE, -11, "parse error")

/* The codes run from -1 down without a gap; SOPHIA_ERRNO_LAST_ is one
 * below the lowest, so `SOPHIA_ERRNO_LAST_ < rc && rc < 0` holds for
 * exactly the codes this header knows (a newer host may return a code at
 * or below it: treat that as a generic failure). */
typedef enum sophia_errno {
    SOPHIA_OK = 0,
#define SOPHIA_ERR_ENUM_(name, val, str) SOPHIA_##name = (val),
    SOPHIA_ERRNO_MAP(SOPHIA_ERR_ENUM_)
#undef SOPHIA_ERR_ENUM_
#define SOPHIA_ERR_MINUS1_(name, val, str) -1
    SOPHIA_ERRNO_LAST_ = -1 SOPHIA_ERRNO_MAP(SOPHIA_ERR_MINUS1_)
#undef SOPHIA_ERR_MINUS1_
} sophia_errno;

/* ---------------------------------------------------------------- options */

typedef enum sophia_opt_type {
    SOPHIA_OPT_STRING = 1, /* any scalar */
    SOPHIA_OPT_INT,        /* 64-bit signed integer */
    SOPHIA_OPT_DOUBLE,     /* floating point */
    SOPHIA_OPT_BOOL,       /* true/false/yes/no/on/off */
    SOPHIA_OPT_LIST,       /* a YAML sequence of scalars */
    /* since 1.2: any YAML value (a mapping, a sequence of mappings...),
     * handed over as compact JSON text: read it with opt_string and
     * json_parse. Plain scalars become numbers, booleans or null where
     * YAML would read them so, quoted ones stay strings. */
    SOPHIA_OPT_JSON
} sophia_opt_type;

/* One entry of a plugin's option table; the table ends with name == NULL.
 * `def` is the default as YAML would spell it (NULL = required, except for
 * lists, whose default is always empty: a list with a `def` is refused at
 * load, naming the option). The host rejects unknown keys, missing
 * required ones and values of the wrong type, naming file:line:col. */
typedef struct sophia_option {
    const char *name;
    sophia_opt_type type;
    const char *def;
    const char *description;
} sophia_option;

/* Validated options of one plugin instance; read with host->opt_*. */
typedef struct sophia_opts sophia_opts;

/* The host's handle for one plugin instance, given to init(); pass it to
 * log and counter_add so they name the instance. */
typedef struct sophia_self sophia_self;

/* ------------------------------------------------------------------- JSON */

/* An opaque JSON value owned by the host's JSON library. */
typedef struct sophia_json sophia_json;

typedef enum sophia_json_type {
    SOPHIA_JSON_NULL = 0,
    SOPHIA_JSON_BOOL,
    SOPHIA_JSON_NUMBER,
    SOPHIA_JSON_STRING,
    SOPHIA_JSON_ARRAY,
    SOPHIA_JSON_OBJECT,
    SOPHIA_JSON_MISSING /* what a lookup of an absent key returns */
} sophia_json_type;

/* ----------------------------------------------------------------- events */

typedef struct sophia_event {
    /* --- since 1.0 --- */
    uint32_t struct_size;
    const char *stream;       /* stream name from the YAML */
    const char *id;           /* source id (e.g. Redis entry id) or NULL */
    const char *source;       /* "http", "hook", "redis", "statsd" */
    const sophia_json *body;  /* the event: one JSON value */
    int64_t received_us;      /* wall clock, microseconds since the epoch */
} sophia_event;

/* What process() asks the host to do with the event. */
typedef enum sophia_verdict {
    SOPHIA_PROCESS_OK = 0, /* apply the actions it queued, then ack */
    SOPHIA_PROCESS_DROP,   /* discard actions, count as filtered, ack */
    SOPHIA_PROCESS_RETRY,  /* discard actions, deliver the event again later */
    SOPHIA_PROCESS_ERROR   /* discard actions, count as failed */
} sophia_verdict;

/* Actions a callback queues (publish, cache put, alert, ...) are collected
 * in a context and applied by the core only when the callback succeeds. */
typedef struct sophia_ctx sophia_ctx;

typedef enum sophia_update_type {
    SOPHIA_UPDATE_METRIC = 0,
    SOPHIA_UPDATE_ALERT,
    SOPHIA_UPDATE_NOTIFICATION,
    SOPHIA_UPDATE_DATA
} sophia_update_type;

typedef enum sophia_log_level {
    SOPHIA_LOG_DEBUG = 0,
    SOPHIA_LOG_INFO,
    SOPHIA_LOG_WARN,
    SOPHIA_LOG_ERROR
} sophia_log_level;

/* --------------------------------------------------------------- alerts */

/* What host->alert_ex raises or resolves (since 1.1). Zero it, set
 * struct_size = sizeof(sophia_alert), then the fields you need; it grows
 * at its end like every struct here. */
typedef struct sophia_alert {
    uint32_t struct_size;
    const char *alert_type; /* e.g. "threshold"; NULL = "system" */
    const char *severity;   /* "info", "warning", "critical"...; NULL = "info" */
    const char *message;    /* NULL = "" */
    /* Names the condition, so that a resolve matches the alert it ends
     * (e.g. "urgent_open:acme.io"); NULL = none. */
    const char *alert_id;
    const char *topic;        /* an extra topic, or NULL */
    const char *dashboard_id; /* `dashboard:<id>` too, or NULL */
    /* 0: the condition holds (state "firing"); 1: it ended (state
     * "resolved"). Resolve with the severity the alert was raised with,
     * so whoever follows `alerts:<severity>` sees it end. */
    int resolve;
} sophia_alert;

/* ------------------------------------------------- outputs (since 1.2) */

/* One deliver() of an output plugin in progress: hand it back to
 * host->output_done exactly once. */
typedef struct sophia_output_call sophia_output_call;

/* An HTTP request host->http_request makes (since 1.2). Zero it, set
 * struct_size = sizeof(sophia_http_request), then the fields you need. */
typedef struct sophia_http_request {
    uint32_t struct_size;
    const char *method;          /* "POST", "PUT", ...; NULL = "POST" */
    const char *url;             /* http[s]://host[:port]/path[?query] */
    const char *const *headers;  /* "Name: value" strings, NULL-terminated,
                                  * or NULL; Host and Content-Length are the
                                  * host's */
    const char *body;            /* borrowed for the call; may be NULL */
    size_t body_len;
    double timeout_s;            /* connect, send and each wait for the
                                  * answer; <= 0: 10 s */
    /* since 1.3 (a host reads them when struct_size covers them; a 1.2
     * host refuses https://) - https:// only.
     * The server's certificate chain and name are verified by default,
     * against the system's CA store. */
    const char *ca_file;         /* PEM CA bundle to verify against instead */
    int tls_insecure;            /* 1: verify nothing (testing only) */
} sophia_http_request;

/* -------------------------------------------------------------- host API */

/* Functions the host hands to init(). Grows only at its end; every member
 * sits under a `--- since 1.N ---` header (or says `since 1.N:` itself),
 * and a plugin calls a member newer than the minor it was built for only
 * after SOPHIA_HOST_HAS(host, member) said the host has it. */
typedef struct sophia_host {
    /* --- since 1.0: the header --- */
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;

    /* --- since 1.0: logging and errors --- */
    /* logfmt line: `ts level plugin=<instance> msg`. */
    void (*log)(sophia_self *self, sophia_log_level level, const char *fmt,
                ...)
        SOPHIA_PRINTF(3, 4);
    /* The name of a sophia_errno value. */
    const char *(*strerror)(int err);

    /* --- since 1.0: options (validated before init) --- */
    /* Any scalar option's text (borrowed until fini), or NULL. */
    const char *(*opt_string)(const sophia_opts *o, const char *name);
    /* An INT option's value (0 for a name not in the table). */
    int64_t (*opt_int)(const sophia_opts *o, const char *name);
    /* A DOUBLE (or INT) option's value. */
    double (*opt_double)(const sophia_opts *o, const char *name);
    /* A BOOL option's value, 0 or 1. */
    int (*opt_bool)(const sophia_opts *o, const char *name);
    /* Number of items of a LIST option. */
    size_t (*opt_list_len)(const sophia_opts *o, const char *name);
    /* Item i of a LIST option (borrowed until fini), or NULL. */
    const char *(*opt_list_item)(const sophia_opts *o, const char *name,
                                 size_t i);

    /* --- since 1.0: reading JSON (borrowed values) --- */
    /* The value's type; SOPHIA_JSON_MISSING for NULL. */
    sophia_json_type (*json_type)(const sophia_json *v);
    /* Dotted path lookup ("a.b.0.c"); NULL when absent. */
    const sophia_json *(*json_get)(const sophia_json *v, const char *path);
    /* The string, or NULL when v is not a string. */
    const char *(*json_string)(const sophia_json *v);
    /* The number (integer or real), or `def` when v is not a number. */
    double (*json_number)(const sophia_json *v, double def);
    /* The boolean as 0/1, or `def` when v is not a boolean. */
    int (*json_bool)(const sophia_json *v, int def);
    size_t (*json_size)(const sophia_json *v); /* array/object length */
    /* i-th element of an array (borrowed), or NULL. */
    const sophia_json *(*json_at)(const sophia_json *v, size_t i);
    /* i-th member of an object (insertion order): key and value. */
    const char *(*json_key_at)(const sophia_json *v, size_t i,
                               const sophia_json **value);

    /* --- since 1.0: building JSON (owned by the plugin until taken) --- */
    /* New empty object / array, NULL on out of memory. */
    sophia_json *(*json_object)(void);
    sophia_json *(*json_array)(void);
    /* New string (copied), number, integer or boolean value. */
    sophia_json *(*json_str)(const char *s);
    sophia_json *(*json_num)(double d);
    sophia_json *(*json_int)(int64_t i);
    sophia_json *(*json_bool_new)(int b); /* not json_boolean: a jansson macro */
    /* Deep copy of a borrowed value. */
    sophia_json *(*json_copy)(const sophia_json *v);
    /* Takes `value`. Returns 0 or a negative sophia_errno. */
    int (*json_set)(sophia_json *obj, const char *key, sophia_json *value);
    /* Takes `value` and appends it to `arr`. 0 or a negative errno. */
    int (*json_append)(sophia_json *arr, sophia_json *value);
    /* Frees a value the plugin owns (NULL is fine); never a borrowed one. */
    void (*json_free)(sophia_json *v);
    /* Compact JSON text; free with host->free, or return it from
     * export_state as is. */
    char *(*json_dump)(const sophia_json *v);
    /* Frees text that crosses the boundary: what json_dump returned, and
     * what the host got from export_state. It is the C library's free(),
     * so malloc'd text may be handed to it too. */
    void (*free)(void *p);

    /* --- since 1.0: actions, applied when the callback succeeds --- */
    /* Publish an update of `type` to `updates:<type>`, to
     * `dashboard:<dashboard_id>` when dashboard_id is not NULL, to
     * `stream:<name>` when the context comes from a stream, plus `topic`
     * when not NULL. Takes `data`. */
    int (*publish)(sophia_ctx *ctx, sophia_update_type type,
                   const char *topic, const char *dashboard_id,
                   sophia_json *data);
    /* An alert: `updates:alert`, `alerts`, `alerts:<severity>`. */
    int (*alert)(sophia_ctx *ctx, const char *alert_type, const char *severity,
                 const char *message, sophia_json *data /* taken, or NULL */);
    /* Put `value` (taken) under `key`, through the write strategy. tags is
     * NULL-terminated or NULL; ttl_s <= 0 uses the tier's default.
     * SOPHIA_EINVAL for a key that is not 1..1024 bytes of UTF-8 without
     * control bytes, a tag that is not 1..400 bytes without a newline or
     * 0x1f (or more than 16 tags), or a ttl_s that is NaN or over
     * 315360000 (10 years). */
    int (*cache_put)(sophia_ctx *ctx, const char *key, sophia_json *value,
                     double ttl_s, const char *const *tags);
    /* Drop `key` from every tier. */
    int (*cache_invalidate)(sophia_ctx *ctx, const char *key);
    /* Drop every key tagged `tag` from every tier. */
    int (*cache_invalidate_tag)(sophia_ctx *ctx, const char *tag);

    /* --- since 1.0: immediate reads and counters --- */
    /* A copy of the L1 value (caller frees with json_free), or NULL. */
    sophia_json *(*cache_peek)(const char *key);
    /* Adds to `sophia_plugin_<name>_total{instance="..."}`. Called from
     * a callback given a ctx (process, a timer's, a consolidator run), the
     * addition moves with that ctx: counted when it commits, not at all
     * when it does not (so an event delivered again counts once). */
    void (*counter_add)(sophia_self *self, const char *name, double delta);
    /* Wall clock in microseconds since the epoch. */
    int64_t (*now_us)(void);
    /* since 1.0: read through the tiers (L1, L2, L3), promoting a lower
     * tier's hit upward; cb runs once, maybe before cache_get returns,
     * with rc 0 and the value (borrowed for the call) or SOPHIA_ENOENT.
     * Returns 0, or an error (cb not called). Not an action: it reads now. */
    int (*cache_get)(const char *key,
                     void (*cb)(void *arg, int rc, const sophia_json *value),
                     void *arg);
    /* since 1.0: remember `content` (an action, applied on success).
     * memory_type NULL = "fact"; context: an object of scalars (taken) or
     * NULL; importance 0..1, or < 0 for the default. */
    int (*memory_store)(sophia_ctx *ctx, const char *content,
                        const char *memory_type, sophia_json *context,
                        double importance);
    /* since 1.0: hybrid search (SPEC §8), asynchronous: cb runs later on
     * the loop with rc 0 and the results array (borrowed for the call:
     * objects with id, content, memory_type, context, score, score_parts)
     * or a negative sophia_errno and NULL. filter: object KEY -> string
     * (borrowed) or NULL. k in 1..100. Returns 0 or an error (cb not
     * called). The instance must outlive the callback. */
    int (*memory_search)(const char *query, const sophia_json *filter,
                         size_t k,
                         void (*cb)(void *arg, int rc,
                                    const sophia_json *results),
                         void *arg);
    /* since 1.0: consolidators only - the memories this run looks at, a
     * borrowed array of objects {id, content, memory_type, context,
     * importance, access_count, feedback, created_at, last_access, age_s,
     * user_id, agent_id, session_id, decayed_at (1.3: see
     * memory_set_importance), neighbors:[{id, cosine, memory_type,
     * context, content_len, importance, user_id, agent_id, session_id}]}
     * (neighbours: the nearest live memories across the whole store,
     * cosine >= 0.5, best first; scopes are strings or null); NULL outside
     * a consolidator's run. Successive runs take successive batches, so a
     * pass covers every memory (memory.consolidate.<instance>.batch). The
     * scopes and the neighbours' rows come from hosts of 1.2 on: an older
     * host gives each neighbour's id and cosine only. */
    const sophia_json *(*memory_batch)(sophia_ctx *ctx);
    /* since 1.0: consolidators only (actions): fold `drop_id` into
     * `keep_id` (access counts summed, importance and last access the
     * higher, drop's consolidated_into = keep, drop leaves the index;
     * nothing happens unless both are live and in the same scope), or
     * expire `id` (deleted from PostgreSQL and the index). Either is
     * recorded in the memory's history with the instance's name. */
    int (*memory_merge)(sophia_ctx *ctx, int64_t keep_id, int64_t drop_id);
    int (*memory_expire)(sophia_ctx *ctx, int64_t id);
    /* since 1.0: parses JSON text (e.g. what import_state receives) into a value the plugin owns (json_free), or NULL when it is not JSON. */
    sophia_json *(*json_parse)(const char *text);

    /* --- since 1.1: plugin state that moves with the event's verdict --- */
    /* Stages a change to the plugin's own state: the host calls
     * apply(state, change) once this context's actions have all taken
     * effect (for an event: when the event commits, SPEC §11), or
     * discard(change) when they do not (a verdict other than OK, or an
     * effect refused, after which the event is delivered again). Exactly
     * one of the two runs, on the loop, in the order changes were staged.
     * So a processor never counts, alerts or records a transition for an
     * event whose effects were lost; it keeps its state in its own
     * structs. discard may be NULL. Returns 0, or SOPHIA_EINVAL /
     * SOPHIA_ENOMEM (discard has then run). */
    int (*stage)(sophia_ctx *ctx, void (*apply)(void *state, void *change),
                 void (*discard)(void *change), void *change);

    /* --- since 1.1: JSON by exact key, deletion, iteration --- */
    /* The member named exactly `key` ("a.b" is one key here, not a path,
     * so ids with dots work), borrowed; NULL when absent or `obj` is not
     * an object. */
    const sophia_json *(*json_get_key)(const sophia_json *obj,
                                       const char *key);
    /* Removes (and frees) member `key` of an object the plugin owns: 0,
     * SOPHIA_ENOENT when absent, SOPHIA_EINVAL when `obj` is no object. */
    int (*json_del)(sophia_json *obj, const char *key);
    /* Walks an object's members in insertion order, O(1) a step. Pass
     * NULL to start, then what the last call returned; it returns NULL at
     * the end (or when `obj` is no object) and otherwise sets *key and
     * *value (borrowed) to the current member. Do not add or delete
     * members of `obj` while walking it.
     *   const char *k; const sophia_json *v;
     *   for (void *it = h->json_iter(o, NULL, &k, &v); it;
     *        it = h->json_iter(o, it, &k, &v)) ...  */
    void *(*json_iter)(const sophia_json *obj, void *it, const char **key,
                       const sophia_json **value);

    /* --- since 1.1: an alert with a topic, a dashboard, and resolution --- */
    /* Like alert(), described by `a` (see sophia_alert); takes `data` (an
     * object, or NULL). Goes to `updates:alert`, `dashboard:<id>` when
     * a->dashboard_id is set, `stream:<name>` for a stream event, `alerts`,
     * `alerts:<severity>` and a->topic when set. The update's data is
     * `data` plus alert_type, message, severity, state ("firing", or
     * "resolved" when a->resolve) and alert_id when set. 0, or
     * SOPHIA_EINVAL (no ctx or a, a->struct_size too small), SOPHIA_ENOMEM. */
    int (*alert_ex)(sophia_ctx *ctx, const sophia_alert *a,
                    sophia_json *data);

    /* --- since 1.1: timers on the loop, owned by the instance --- */
    /* Runs cb(arg, ctx) on the loop `delay_s` seconds from now, then every
     * `repeat_s` seconds when repeat_s > 0 (0: once). `ctx` collects
     * actions (publish, alert, cache_put, stage, ...) like a consolidator
     * run's: applied when cb returns 0, discarded otherwise. A timer added
     * before the loop runs (in init at start-up) counts from its start;
     * at --check none fires. Every timer of `self` is cancelled when the
     * instance is unloaded or replaced by a reload: the new instance arms
     * its own (in init, or in import_state from the handed-over state; see
     * sdk/README.md). Returns an id > 0, or SOPHIA_EINVAL (no self or cb;
     * a delay or repeat that is negative, NaN or over 315360000 s, or a
     * repeat under 0.001 s), SOPHIA_ENOMEM. */
    int64_t (*timer_add)(sophia_self *self, double delay_s, double repeat_s,
                         int (*cb)(void *arg, sophia_ctx *ctx), void *arg);
    /* Cancels timer `id` of `self` (also from its own callback): 0, or
     * SOPHIA_ENOENT when it is not a pending timer of this instance (a
     * one-shot that fired, one already cancelled, another's). */
    int (*timer_del)(sophia_self *self, int64_t id);

    /* --- since 1.1: asynchronous reads owned by the instance --- */
    /* cache_get and memory_search (above: same arguments, same answer),
     * but the pending callback belongs to `self`: when the instance is
     * unloaded or replaced before the answer comes, the callback is
     * cancelled and never runs, so `arg` may point into the instance's
     * state. Use these rather than the 1.0 members, whose callbacks keep
     * a retired instance loaded until they ran. */
    int (*cache_get_ex)(sophia_self *self, const char *key,
                        void (*cb)(void *arg, int rc,
                                   const sophia_json *value),
                        void *arg);
    int (*memory_search_ex)(sophia_self *self, const char *query,
                            const sophia_json *filter, size_t k,
                            void (*cb)(void *arg, int rc,
                                       const sophia_json *results),
                            void *arg);

    /* --- since 1.1: state changed at once, undone unless the event commits --- */
    /* Like stage, but in a stream event's context apply(state, change)
     * runs at once, before this returns, so the processor's next event
     * already sees the change and the stream starts it without waiting
     * for this event's effects (after stage it waits: process() must see
     * every earlier change, so a stream whose processor stages is as slow
     * as its slowest effect). When the event does not commit - a verdict
     * other than OK, an effect refused, an older event of the stream that
     * failed (its younger events go back with it), a reload replacing
     * the instance - undo(state, change) runs, on the loop, newest change
     * first across the stream's events, so each undo finds the state as
     * its apply left it. release(change) runs last either way (NULL:
     * nothing to free). In a timer's or consolidator's context, which
     * runs beside the streams, apply waits for the commit as with stage
     * and undo never runs. Returns 0, or SOPHIA_EINVAL (no ctx, apply or
     * undo) / SOPHIA_ENOMEM; apply has then not run and release has. */
    int (*stage_undoable)(sophia_ctx *ctx,
                          void (*apply)(void *state, void *change),
                          void (*undo)(void *state, void *change),
                          void (*release)(void *change), void *change);

    /* --- since 1.1: a read through all tiers before process() --- */
    /* From a processor's prefetch callback only: read `key` through the
     * tiers before this event's process() (sophia_processor_ops.prefetch).
     * 0, SOPHIA_EINVAL (no ctx, not a prefetch callback's ctx, an invalid
     * cache key), SOPHIA_ETOOBIG (a 65th key), SOPHIA_ENOMEM. Naming a
     * key twice reads it once. */
    int (*prefetch)(sophia_ctx *ctx, const char *key);
    /* From process(): what the prefetch of `key` read for this event. 0
     * and *value (borrowed until process() returns), SOPHIA_ENOENT when no
     * tier holds the key, SOPHIA_EINVAL when `key` was not prefetched for
     * this event (nothing ran the processor's prefetch: read cache_peek
     * then). */
    int (*prefetched)(sophia_ctx *ctx, const char *key,
                      const sophia_json **value);

    /* --- since 1.2: processor chains (streams.<name>.processors) --- */
    /* From process(): hands `event` (taken, even on error) to the next
     * link of the stream's chain in place of the event process() got.
     * Call it once per event to pass on (a rewrite: once; a split:
     * several); a processor that never calls it passes its event on as
     * it came, and DROP passes nothing. The emitted events go on only if
     * the verdict is OK, and with the rest of the event's effects. On a
     * stream's last link (or a stream of one processor) they leave the
     * chain. Returns 0, SOPHIA_EINVAL (no ctx or event), SOPHIA_ENOMEM.
     * sophia-plugin-test prints each as {"action":"emit","event":...}. */
    int (*emit)(sophia_ctx *ctx, sophia_json *event);

    /* --- since 1.2: outputs, and the I/O the host makes for them --- */
    /* An output's deliver() is done: rc 0 = every record of the batch was
     * delivered (their events may be acknowledged); SOPHIA_EINVAL,
     * SOPHIA_EPERM, SOPHIA_ETOOBIG or SOPHIA_EPARSE = the receiver refused
     * the batch for good (its events are retried by their streams and go
     * to the dead letter after max_attempts); any other error = try again:
     * the host delivers the same batch again after a back-off (forever:
     * the events stay unacknowledged meanwhile, and their streams stop
     * taking new ones once their queues fill). Call it exactly once per
     * call, from deliver() itself or later on the loop. */
    void (*output_done)(sophia_output_call *call, int rc);
    /* An HTTP/1.1 request on the loop (http://, or https:// over TLS,
     * verified as sophia_http_request says). cb runs exactly once, later,
     * on the loop: rc 0 with the status and the response body (borrowed
     * for the call), or rc SOPHIA_ETIMEDOUT / SOPHIA_EUNAVAIL (no
     * connection, reset, a TLS handshake or verification that failed)
     * with status 0 and, when there is more to say, a description as the
     * body ("TLS: certificate verify failed: ..."), else NULL. Returns 0,
     * or SOPHIA_EINVAL (no self, req or url; a bad url) / SOPHIA_ENOMEM
     * (cb not called). A callback still pending
     * keeps a retired instance loaded until it ran. */
    int (*http_request)(sophia_self *self, const sophia_http_request *req,
                        void (*cb)(void *arg, int rc, int status,
                                   const char *body, size_t len),
                        void *arg);
    /* One Redis command (binary-safe argv) on the host's connection to
     * `url` (NULL: the daemon's redis.url), which the host opens on first
     * use and keeps, reconnecting. cb runs exactly once, later: rc 0 and
     * the reply as JSON (string, integer, array, null; borrowed for the
     * call), or rc SOPHIA_EIO with the error reply as a string, or
     * SOPHIA_EUNAVAIL / SOPHIA_ETIMEDOUT and NULL. Returns 0, or
     * SOPHIA_EINVAL (no self, argc < 1, no url and no redis.url),
     * SOPHIA_EUNAVAIL (Redis down now), SOPHIA_ENOMEM: cb not called. */
    int (*redis_command)(sophia_self *self, const char *url, int argc,
                         const char *const *argv, const size_t *argvlen,
                         void (*cb)(void *arg, int rc,
                                    const sophia_json *reply),
                         void *arg);
    /* One SQL statement with text parameters ($1..$n; a NULL value is SQL
     * NULL) on the host's connection to `conninfo` (NULL: the daemon's
     * postgres.url), opened on first use. cb runs exactly once, later: rc
     * 0 and the rows affected (or returned); rc SOPHIA_EIO and the
     * server's message with its SQLSTATE ("... (SQLSTATE 23514)") for an
     * error another try would repeat (data, integrity, syntax...); or rc
     * SOPHIA_EUNAVAIL: the connection is gone, or a server error a retry
     * may cure (SQLSTATE classes 08, 40, 53, 57, 58 and 55P03: say a
     * serialization failure, a deadlock, a statement_timeout, a full
     * disk), with the message when there is one. Returns 0, or
     * SOPHIA_EINVAL, SOPHIA_EUNAVAIL (PostgreSQL down now), SOPHIA_EBUSY,
     * SOPHIA_ENOMEM: cb not called. */
    int (*pg_query)(sophia_self *self, const char *conninfo, const char *sql,
                    int nparams, const char *const *values,
                    void (*cb)(void *arg, int rc, int64_t rows,
                               const char *err),
                    void *arg);
    /* HMAC-SHA256 of `data` under `key`, as 64 lowercase hex digits and a
     * NUL in `hex`: what a receiver checks a signed request with. 0, or
     * SOPHIA_EINVAL. */
    int (*hmac_sha256_hex)(const void *key, size_t key_len, const void *data,
                           size_t len, char hex[65]);

    /* --- since 1.3: what a consolidator writes back --- */
    /* Consolidators only (an action): sets memory `id`'s importance to
     * `importance` (0..1) and its `decayed_at` (a batch row's field:
     * seconds since the epoch, or null) to now, so a decay computed from
     * the idle time since max(last_access, created_at, decayed_at) never
     * counts the same time twice; recorded in the memory's history
     * ("decayed") with the instance's name. Nothing happens when the
     * memory is gone by then. 0, or SOPHIA_EINVAL (importance not in
     * 0..1, id <= 0), SOPHIA_ENOMEM. */
    int (*memory_set_importance)(sophia_ctx *ctx, int64_t id, double importance);

    /* --- since 1.4: values that are already JSON text --- */
    /* The compact JSON text of `v`, exactly what json_dump gives, written
     * into buf and NUL-ended when it fits: returns its length, so a result
     * >= cap means buf was too small (like snprintf; nothing useful is
     * written then). 0 for NULL. For a plugin assembling publish_text or
     * cache_put_text out of values it read. */
    size_t (*json_write)(const sophia_json *v, char *buf, size_t cap);
    /* publish() with `data` given as `len` bytes of JSON text (borrowed),
     * which subscribers receive as it is: one update, as if publish() had
     * been given the value the text parses to, with no value built,
     * copied or encoded. For the hot path of a plugin that publishes for
     * every event. SOPHIA_EINVAL when the text is not exactly one JSON
     * value (UTF-8, no escaped NUL, nested at most 64 deep) or type is
     * unknown; SOPHIA_ENOMEM. */
    int (*publish_text)(sophia_ctx *ctx, sophia_update_type type,
                        const char *topic, const char *dashboard_id,
                        const char *json, size_t len);
    /* cache_put() with the value given as `len` bytes of JSON text
     * (borrowed), stored as it is; the rules of cache_put and of
     * publish_text's text, SOPHIA_EINVAL otherwise. */
    int (*cache_put_text)(sophia_ctx *ctx, const char *key, const char *json,
                          size_t len, double ttl_s, const char *const *tags);
} sophia_host;

/* True when the host table `h` has `member`: what a plugin checks before
 * calling a member added after the minor it requires (a 1.1 plugin on a
 * 1.0 host has no `stage`). */
#define SOPHIA_HOST_HAS(h, member)                                            \
    ((h)->struct_size >=                                                      \
     offsetof(sophia_host, member) + sizeof((h)->member))

/* --------------------------------------------------------- plugin kinds */

typedef enum sophia_plugin_kind {
    SOPHIA_KIND_PROCESSOR = 1,
    SOPHIA_KIND_WRITE_STRATEGY,
    SOPHIA_KIND_CONSOLIDATOR,
    SOPHIA_KIND_OUTPUT = 4,   /* since 1.2: forwards events and alerts */
    SOPHIA_KIND_EMBEDDER = 5, /* since 1.2: text -> vectors for memory */
    SOPHIA_KIND_CORRELATOR = 6 /* since 1.2: relates events across streams */
} sophia_plugin_kind;

typedef struct sophia_processor_ops {
    uint32_t struct_size;
    /* since 1.0: handle one event. Queue actions through the host with
     * `ctx`; they are applied only when the verdict is OK. */
    sophia_verdict (*process)(void *state, const sophia_event *ev,
                              sophia_ctx *ctx);
    /* since 1.0: hot reload hand-over (optional): the state as JSON text,
     * or NULL. The host frees it with host->free, so return json_dump's
     * text as is, or text from malloc/strdup (host->free is the C
     * library's free: the one rule for text crossing the boundary). */
    char *(*export_state)(void *state);
    /* since 1.0: hot reload hand-over (optional): adopt what the previous instance's export_state returned; 0 or an error. */
    int (*import_state)(void *state, const char *json);
    /* since 1.1 (optional): names the cache keys process() will read for
     * `ev`, calling host->prefetch(ctx, key) for each (at most 64). The
     * host reads them through every tier (L1, then L2, then L3; an L1 hit
     * answers at once) and only then calls process(), where
     * host->prefetched(ctx, key, &value) hands out what was read. This
     * `ctx` serves host->prefetch only: anything else queued on it is
     * discarded. The stream holds its later events while an event's reads
     * are out, so events still reach process() in order. A read that
     * cannot answer truly (a tier down, where a miss may be false) makes
     * the event a RETRY, as a refused effect does. Returns 0, or a
     * negative sophia_errno (the event is retried). A 1.0 host never
     * calls it (and has no host->prefetched: check SOPHIA_HOST_HAS);
     * sophia-plugin-test answers it from its in-memory cache. */
    int (*prefetch)(void *state, const sophia_event *ev, sophia_ctx *ctx);
} sophia_processor_ops;

/* Where a put must land before it is acknowledged. */
typedef enum sophia_tier_mask {
    SOPHIA_TIER_L1 = 1,
    SOPHIA_TIER_L2 = 2,
    SOPHIA_TIER_L3 = 4
} sophia_tier_mask;

/* What a write strategy's plan_put_ex is told about one put (since 1.1;
 * grows at its end: read a member only if struct_size covers it). */
typedef struct sophia_put_info {
    uint32_t struct_size;
    size_t size;             /* bytes of the value as stored (JSON text) */
    double ttl_s;            /* as asked: <= 0 means the tier's default */
    const char *const *tags; /* NULL-terminated, or NULL for none */
} sophia_put_info;

typedef struct sophia_write_ops {
    uint32_t struct_size;
    /* since 1.0: tiers written synchronously before the put is acked,
     * tiers written later (write-back), and tiers invalidated. */
    void (*plan_put)(void *state, const char *key, unsigned *sync_tiers,
                     unsigned *deferred_tiers, unsigned *invalidate_tiers);
    /* since 1.0: for deferred tiers, how the dirty set is flushed: every
     * *interval_s seconds or *batch entries, with at most *max_dirty
     * entries waiting (more is refused: backpressure). NULL = defaults. */
    void (*flush_params)(void *state, double *interval_s, size_t *batch,
                         size_t *max_dirty);
    /* since 1.1 (optional): plan_put with what is put - its size, ttl
     * and tags (borrowed for the call) - so a strategy can e.g. defer
     * large values or keep volatile tags out of L3. A 1.1 host calls it
     * instead of plan_put when set; plan_put stays required, since a 1.0
     * host knows only that one. */
    void (*plan_put_ex)(void *state, const char *key,
                        const sophia_put_info *info, unsigned *sync_tiers,
                        unsigned *deferred_tiers, unsigned *invalidate_tiers);
} sophia_write_ops;

typedef struct sophia_consolidator_ops {
    uint32_t struct_size;
    /* since 1.0: one consolidation pass; queue changes through `ctx`. */
    int (*run)(void *state, sophia_ctx *ctx);
} sophia_consolidator_ops;

/* An embedder (since 1.2) turns text into vectors for the memory store:
 * memory.embedder names its instance. Unlike every other callback, its
 * `embed` and `fit` run on the host's worker threads, several at once,
 * never on the loop; so they may take milliseconds, but must be
 * thread-safe: read the state init() built, never change it. What an
 * embedder learns from the store (`fit`) is not written into the state
 * but returned as a separate model object the host owns, hands back to
 * every `embed`, saves (`model_export`) and restores (`model_import`)
 * across restarts: a refit is then a new model the host re-embeds the
 * store with in the background while the old one keeps serving.
 * sdk/README.md, "Embedders", has a sketch of an ONNX Runtime one. */
typedef struct sophia_embedder_ops {
    uint32_t struct_size;
    /* since 1.2: the vectors' size, fixed for the instance's life (e.g.
     * from an option or the model's output shape); 8..4096. */
    int (*dimension)(void *state);
    /* since 1.2: embeds texts[0..n) (texts[i] is lens[i] bytes, not
     * NUL-terminated, UTF-8) into out: n rows of dimension() floats.
     * Each row L2-normalized (inner product = cosine), or all zeros for a
     * text without features. The same text and model give the same
     * vector every time. `model` is what fit/model_import made, or NULL
     * (not fitted). Worker threads only. 0, or a negative sophia_errno
     * (the whole batch failed). */
    int (*embed)(void *state, const void *model, const char *const *texts,
                 const size_t *lens, size_t n, float *out);
    /* since 1.2 (optional): text naming what else the vectors depend on
     * beyond the plugin's name, version and options (a model file's
     * checksum, say); borrowed until fini. The host tags the index with
     * it: when it changes, the store is re-embedded. NULL = nothing. */
    const char *(*fingerprint)(void *state);
    /* since 1.2 (optional, all four or none): learn from the store. fit
     * gets a sample of stored texts (worker thread) and returns a new
     * model (NULL: nothing learnt, keep the current one). The host asks
     * again as the store grows (each time its live rows doubled) and
     * re-embeds the store with each new model. */
    void *(*fit)(void *state, const char *const *texts, const size_t *lens,
                 size_t n);
    /* The model as text (the host stores it in PostgreSQL; free with
     * host->free, so malloc'd), and back (NULL: not a model of ours). */
    char *(*model_export)(void *state, const void *model);
    void *(*model_import)(void *state, const char *text);
    void (*model_free)(void *state, void *model);
} sophia_embedder_ops;

/* What an output's deliver() is given (since 1.2; grows at its end). A
 * record is an object: {"type":"event", "stream", "id" (or null),
 * "source", "received_ms", "event": the event's JSON} for each event that
 * left the stream's processors (as it came, or what the last link of a
 * chain emitted for it), and {"type":"alert", "stream", "event_id",
 * "alert": the alert's data (alert_type, message, severity, state, ...)}
 * for each alert the processors raised while processing it. An alert
 * raised outside an event (a timer, a consolidator, a correlator) has
 * "stream" and "event_id" null and "instance": the instance that raised
 * it. */
typedef struct sophia_output_batch {
    uint32_t struct_size;
    const sophia_json *records; /* an array, borrowed until output_done */
    const char *json;           /* the same array as compact JSON text */
    size_t json_len;
    size_t count;               /* records in it */
    unsigned attempt;           /* 0, then 1, 2, ... for its retries */
} sophia_output_batch;

/* How the host batches and retries for an output (since 1.2). The host
 * fills the defaults in, then calls sophia_output_ops.params. */
typedef struct sophia_output_params {
    uint32_t struct_size;
    size_t batch;          /* records per deliver(), default 100 */
    size_t batch_bytes;    /* JSON bytes per deliver(), default 1 MiB (a
                            * bigger record goes alone) */
    double flush_interval; /* seconds a partial batch waits, default 0.2 */
    double retry_base;     /* first wait before a batch is tried again, 0.2 s */
    double retry_cap;      /* and the longest, default 30 s */
    /* since 1.3 (check struct_size before writing it): deliver()
     * calls in progress at once, 1..64. The host's default is 1 (batches
     * arrive in order); a plugin whose deliver() can overlap raises it.
     * With more than one, a batch retried after a failure may arrive
     * after later ones, and a receiver may take concurrent batches in any
     * order; each event is still acknowledged only once every output
     * delivered its batch, and its stream commits in order. */
    size_t max_inflight;
} sophia_output_params;

typedef struct sophia_output_ops {
    uint32_t struct_size;
    /* since 1.2: deliver the batch `b` (records and their JSON text are
     * borrowed until output_done) without blocking - start the I/O with
     * host->http_request, redis_command or pg_query - and report through
     * host->output_done(call, rc), exactly once per call. At most
     * max_inflight deliver() calls per instance are in progress at a time
     * (sophia_output_params; 1 unless params() raised it), each with its
     * own call. */
    void (*deliver)(void *state, const sophia_output_batch *b,
                    sophia_output_call *call);
    /* since 1.2 (optional): adjust batching and retry (e.g. from the
     * plugin's own options); runs once, after init. */
    void (*params)(void *state, sophia_output_params *p);
} sophia_output_ops;

/* A correlator (since 1.2) sees the committed events of the streams
 * `correlators.<instance>.streams` names, and relates them across streams
 * by whatever key it reads from them (an account, a deal). One with
 * export_changes/import_key (since 1.3) is persisted key by key as part
 * of each event's effects; one without them gets the 1.2 whole-state
 * snapshot (export_state every snapshot_every, on the loop). */
typedef struct sophia_correlator_ops {
    uint32_t struct_size;
    /* since 1.2: one committed event of a stream it listens to (`ev->body`
     * is the event as the stream took it in, before its processors; borrowed
     * for the call), on the loop right after the commit, once per commit.
     * Actions queued on `ctx` (alert_ex, publish, cache_put...) are applied
     * like a timer's when it returns 0, discarded otherwise. The event is
     * committed already: nothing it returns puts it back. Change the
     * state directly (there is no retry to undo); close windows with
     * host->timer_add. */
    int (*observe)(void *state, const sophia_event *ev, sophia_ctx *ctx);
    /* since 1.2 (optional): the state as JSON text (host->free frees it),
     * or NULL: handed to the replacing instance at a reload, and written
     * as the instance's snapshot (Redis) every
     * `correlators.<instance>.snapshot_every` and at shutdown. */
    char *(*export_state)(void *state);
    /* since 1.2 (optional): adopt what export_state returned (at a
     * reload, or the snapshot at start-up); 0 or an error (it then
     * starts empty). */
    int (*import_state)(void *state, const char *json);
    /* since 1.3 (optional, with import_key): per-key persistence, what
     * makes an event's observation part of its effects. Calls emit(arg,
     * key, json) once for each key whose state changed since the last
     * call, and forgets them: `key` any text unique in the instance,
     * `json` its state as JSON text, or NULL when the key closed, expired
     * or was evicted (both borrowed for the emit). The host calls it
     * right after each observe() - so keep it proportional to the keys
     * that event changed, never the whole state - and once a second
     * (for what timers changed); it writes the keys to Redis (one hash
     * per instance, a loop turn's keys in one pipeline) and acknowledges
     * the observed event only once they are written. Start tracking
     * changes at the first call: a 1.2 host never makes one. 0, or a
     * negative sophia_errno (the keys stay to be emitted next time). */
    int (*export_changes)(void *state,
                          void (*emit)(void *arg, const char *key,
                                       const char *json),
                          void *arg);
    /* since 1.3 (optional, with export_changes): adopt one key's state as
     * export_changes gave it; at start-up, and when a reload replaces
     * the instance, the host restores the new one key by key from Redis
     * (in no particular order, about fifty per loop turn) before it
     * observes anything. An import does not count as a change. 0, or an
     * error (that key is deleted from Redis). */
    int (*import_key)(void *state, const char *key, const char *json);
} sophia_correlator_ops;

/* ------------------------------------------------------ the descriptor */

/* Growth rule: sizeof(sophia_plugin) never changes within major 1. A
 * member added in minor N takes the first of the `reserved` slots (one
 * pointer each; `reserved` shrinks by one), says `since 1.N`, and is read
 * by the host only when the plugin's abi_minor >= N and its struct_size
 * covers the slot: a plugin built before minor N has a zero there, or a
 * shorter struct_size (tests/plugins/abi_1_0.c), and gets the 1.0
 * behaviour. When the slots are used up, new behaviour goes into the
 * per-kind ops tables, which grow at their end as every other struct
 * here does (struct_size says how far the plugin's copy reaches). */
typedef struct sophia_plugin {
    /* --- since 1.0 --- */
    uint32_t struct_size;    /* sizeof(sophia_plugin) as the plugin built it */
    uint16_t abi_major;      /* SOPHIA_SDK_VERSION_MAJOR */
    uint16_t abi_minor;      /* SOPHIA_SDK_VERSION_MINOR */
    const char *name;        /* e.g. "metrics" */
    const char *version;     /* the plugin's own version, e.g. "1.2.0" */
    sophia_plugin_kind kind;
    const char *description; /* one line */
    const sophia_option *options; /* NULL-name terminated, or NULL */

    /* Create the instance state in *state. Keep `host` and `self` for
     * later calls. Returns 0 or a negative sophia_errno; a failed init
     * fails the load (or the reload, which keeps the old set). */
    int (*init)(const sophia_host *host, sophia_self *self,
                const sophia_opts *opts, void **state);
    /* Free the state init() created (also after --check). May be NULL. */
    void (*fini)(void *state);

    /* Exactly one, matching `kind`. */
    const sophia_processor_ops *processor;
    const sophia_write_ops *write_strategy;
    const sophia_consolidator_ops *consolidator;

    /* --- since 1.2 (read only when abi_minor >= 2) --- */
    const sophia_output_ops *output;     /* SOPHIA_KIND_OUTPUT's ops */
    const sophia_embedder_ops *embedder; /* SOPHIA_KIND_EMBEDDER's ops */
    const sophia_correlator_ops *correlator; /* SOPHIA_KIND_CORRELATOR's */

    /* --- since 1.3 (read only when abi_minor >= 3) --- */
    uintptr_t flags; /* SOPHIA_PLUGIN_* bits, or 0 */

    /* Spare slots: growth without a major bump (the rule above). */
    void *reserved[4];
} sophia_plugin;

/* sophia_plugin.flags (since 1.3).
 * FINI_OFF_LOOP: fini may run on a host thread other than the loop's when
 * a reload retires the instance (a changed module or options): by then
 * its timers, reads and outputs are released and no callback of it runs
 * again. Such a fini calls no host function but json_free and free, and
 * touches nothing it shares with other instances. Freeing a large state then does not stall the
 * loop (the bundled `patterns` correlator takes seconds at 100k keys); at
 * shutdown fini still runs on the loop. */
#define SOPHIA_PLUGIN_FINI_OFF_LOOP 0x1u

/* Convenience for plugins: fill the ABI header of the descriptor. */
#define SOPHIA_PLUGIN_HEADER                                                  \
    .struct_size = sizeof(sophia_plugin),                                     \
    .abi_major = SOPHIA_SDK_VERSION_MAJOR,                                    \
    .abi_minor = SOPHIA_SDK_VERSION_MINOR

#ifdef __cplusplus
}
#endif

#endif /* SOPHIA_SDK_H */
