/*
 * config_doc - see config_doc.h. One entry per key the loader accepts:
 * its default (as written in sophia.yaml, "-" for none) and what it does.
 * Keys with their own parser (the loader has no type for them) carry the
 * type here too. Adding a key to the loader's tables (config_sections.c,
 * config_streams.c) without an entry here fails unit.test_config_doc; describe it here and in config/sophia.yaml.
 */
#include "conf/config_doc.h"

#include <string.h>

#include "conf/config.h"

typedef struct key_doc {
    const char *path;
    const char *type; /* only for keys the loader parses itself */
    const char *def;
    const char *text;
} key_doc;

#define BOOL "boolean"
#define SEQ_STR "sequence of strings"

static const key_doc docs[] = {
    {"server", NULL, "-", "The HTTP, WebSocket and metrics listener."},
    {"server.listen", NULL, "127.0.0.1:8080",
     "Address for HTTP, /ws and /metrics; IPv6 as [::1]:8080. Without ingest "
     "tokens only a loopback address is allowed. SOPHIA_LISTEN and --listen "
     "override it."},
    {"server.max_body", NULL, "1MiB",
     "Largest request body accepted; bigger ones get 413."},
    {"server.max_body_total", NULL, "64MiB",
     "Request body bytes buffered at once over all connections; past it "
     "requests are refused until bodies are consumed."},
    {"server.max_connections", NULL, "1024",
     "Concurrent HTTP connections; more are refused."},
    {"server.hosts", SEQ_STR, "-",
     "Host header names accepted besides loopback names (\"*\" = any); "
     "others get 421."},
    {"server.origins", SEQ_STR, "-",
     "Web origins (https://dash.example.com) allowed to write from a "
     "browser besides the daemon's own."},
    {"server.tls", "mapping {listen, cert, key}", "-",
     "An HTTPS and WSS listener beside server.listen: listen is HOST:PORT, "
     "cert and key are PEM files (relative to this file), checked at load "
     "and re-read on SIGHUP."},
    {"server.tokens", NULL, "-", "Bearer tokens for /ingest and /api."},
    {"server.tokens.secret_env", NULL, "SOPHIA_INGEST_TOKENS",
     "Variable holding comma-separated bearer tokens. Unset or empty: no "
     "authentication, which is accepted on a loopback listener only."},
    {"server.share_dir", NULL, "the installed dashboard",
     "Directory the dashboard files are served from, and where the "
     "memory store reads memory_synonyms.txt."},
    {"server.rate_limit", NULL, "-",
     "Requests per second per caller (bearer token, or IP address without "
     "tokens) on /ingest and /api; over it 429 with Retry-After."},
    {"server.rate_limit.rate", NULL, "0 (no limit)",
     "Token bucket refill rate, requests per second."},
    {"server.rate_limit.burst", NULL, "rate", "Token bucket size."},

    {"log", NULL, "-", "Logging (to stderr, one key=value line per event)."},
    {"log.level", NULL, "info", "Least severe level logged; --log-level "
     "overrides it."},

    {"redis", NULL, "-", "The L2 cache tier."},
    {"redis.url", NULL, "-",
     "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; SOPHIA_REDIS_URL overrides "
     "it (empty disables L2). Keep passwords in the environment."},
    {"postgres", NULL, "-", "The L3 cache tier and the memory store."},
    {"postgres.url", NULL, "-",
     "libpq URI or conninfo; SOPHIA_PG_URL overrides it (empty disables L3)."},

    {"cache", NULL, "-", "The three cache tiers and how writes reach them."},
    {"cache.l1", NULL, "-", "The in-process tier."},
    {"cache.l1.max_entries", NULL, "100000", "Most entries held."},
    {"cache.l1.max_bytes", NULL, "64MiB", "Most bytes held (keys + values)."},
    {"cache.l1.ttl", "duration", "300",
     "Default time to live, at most 10 years."},
    {"cache.l2", NULL, "-", "The Redis tier."},
    {"cache.l2.ttl", "duration", "as the put asked",
     "Longest time an entry stays in L2."},
    {"cache.l3", NULL, "-", "The PostgreSQL tier."},
    {"cache.l3.ttl", "duration", "as the put asked",
     "Longest time an entry stays in L3."},
    {"cache.l3.pool", "integer 1..64", "4",
     "PostgreSQL connections for L3; writes of one key use one connection."},
    {"cache.compress", NULL, "-", "zstd compression of large values in L2 "
     "and L3 (L1 and the write-back journal keep them plain)."},
    {"cache.compress.threshold", NULL, "1KiB",
     "Values longer than this are stored compressed; smaller ones, and "
     "those zstd cannot shrink, stay plain JSON."},
    {"cache.compress.level", "integer 0..19", "1",
     "zstd level; 0 stores every value plain (entries already compressed "
     "are still read)."},
    {"cache.compress.dictionary", "path (relative to the file's directory)",
     "-",
     "A zstd dictionary file (sophia-zdict trains one from L3's values); "
     "every node sharing the tiers needs the same file."},
    {"cache.write", NULL, "-", "Write strategies (write_strategy plugin "
     "instances)."},
    {"cache.write.default", "instance name", "write-through",
     "Strategy for keys no prefix matches."},
    {"cache.write.prefixes", "mapping of key prefix to instance name", "-",
     "Strategy per key prefix; the longest matching prefix wins."},

    {"websocket", NULL, "-", "The /ws endpoint."},
    {"websocket.max_queue", NULL, "1024",
     "Messages queued per client before it is dropped (close 1008)."},
    {"websocket.history", NULL, "256",
     "Messages kept per topic for `since` recovery."},
    {"websocket.history_age", NULL, "300",
     "How long a message stays replayable."},
    {"websocket.ping_interval", NULL, "25", "Idle time before the server "
     "pings."},
    {"websocket.pong_timeout", NULL, "10",
     "Time to answer a ping before the connection is closed."},
    {"websocket.auth_timeout", NULL, "5",
     "Time for the first `auth` message when auth is on."},
    {"websocket.max_connections", NULL, "10000",
     "More upgrades are refused with 503."},
    {"websocket.max_subscriptions", NULL, "256", "Per connection."},
    {"websocket.max_message", NULL, "64KiB",
     "Larger client frames close the connection with 1009."},
    {"websocket.coalesce_at", NULL, "0 (max_queue/2)",
     "Queue depth from which metric updates coalesce."},
    {"websocket.origins", SEQ_STR, "[] (same origin only)",
     "Browser origins allowed to open /ws besides the daemon's own; \"*\" "
     "allows any."},
    {"websocket.auth", NULL, "-", "JWT authentication of /ws."},
    {"websocket.auth.secret_env", "environment variable name", "-",
     "Variable holding the HS256 secret, at least 32 bytes. Unset: no auth "
     "(loopback listener only)."},
    {"websocket.jwt", NULL, "-", "Claims a WebSocket JWT must carry."},
    {"websocket.jwt.require_exp", BOOL, "true",
     "Tokens without `exp` are refused."},
    {"websocket.jwt.issuer", NULL, "-", "When set, `iss` must equal it."},
    {"websocket.jwt.audience", NULL, "-",
     "When set, `aud` must equal or contain it."},
    {"websocket.max_topics", NULL, "100000",
     "Topics with a sequence number and history; publishes to new topics "
     "past it are delivered live only."},
    {"websocket.compression", "off | deflate", "off",
     "permessage-deflate for clients that offer it: each message compressed "
     "once, shared by every such client (README, wire table)."},
    {"websocket.compression_min", NULL, "1KiB",
     "Messages smaller than this go uncompressed on deflate connections: "
     "a ~150 B update shrinks only to 0.79x for 2x the CPU per delivery at "
     "10 clients per topic; 2 KB ones to 0.48x (README, wire table)."},

    {"cluster", NULL, "-", "Several nodes sharing one Redis."},
    {"cluster.redis", NULL, "redis.url",
     "Redis URL for cross-node publishes and L1 invalidation; also "
     "SOPHIA_CLUSTER_REDIS_URL (empty: off)."},
    {"cluster.enabled", BOOL, "true when Redis is configured",
     "The cluster channel: publishes reach every node's subscribers and "
     "cache writes drop the key from every node's L1. false keeps this node "
     "apart."},
    {"cluster.node_id", NULL, "hostname-pid", "This node's name."},

    {"memory", NULL, "-",
     "Contextual memory (needs PostgreSQL): rows in a table, vectors in a "
     "faiss index."},
    {"memory.dim", NULL, "384", "Embedding size of the built-in embedder "
     "(no memory.embedder); changing it re-embeds."},
    {"memory.embedder", "instance name", "-", "An instance of kind embedder "
     "(plugins.instances, e.g. the bundled hashing or ngram_idf) that turns "
     "memories into vectors. Left out: the built-in feature hashing at "
     "memory.dim (the bundled hashing plugin's vectors). Changing it (or its "
     "options) re-embeds every memory in the background while the old "
     "index keeps answering."},
    {"memory.index", NULL, "auto", "flat, hnsw, or auto (HNSW from "
     "hnsw_threshold rows)."},
    {"memory.hnsw_threshold", NULL, "50000", "Rows from which auto uses "
     "HNSW."},
    {"memory.index_path", NULL, "beside the configuration",
     "Where the faiss index is saved (a while after changes: 2 s, or 20 "
     "times the last save's duration when longer). At start the rows it "
     "lacks, or has an older vector of, are added from the table; it is "
     "rebuilt when missing or of another embedder, dimension or kind. The "
     "packaged configuration uses /var/lib/sophia/memory.index."},
    {"memory.table", NULL, "sophia_memory", "PostgreSQL table of memories."},
    {"memory.half_life", NULL, "7d", "Recency weight halves every half_life."},
    {"memory.max_content", NULL, "64KiB", "Longer content is refused with "
     "400."},
    {"memory.workers", NULL, "2",
     "Threads for embedding, vector search and consolidation; building "
     "the HNSW graph (at start, background rebuilds) uses that many "
     "cores."},
    {"memory.rebuild_removed_pct", NULL, "20",
     "Rebuild the index once this percentage of it is removed; 0 = only at "
     "restart."},
    {"memory.consolidate", "mapping of instance name to schedule", "-",
     "When each consolidator instance runs."},
    {"memory.consolidate.INSTANCE.every", NULL, "-", "Run this often."},
    {"memory.consolidate.INSTANCE.after_new", NULL, "-",
     "Also run after this many new memories."},
    {"memory.consolidate.INSTANCE.batch", NULL, "1000",
     "Memories one run looks at: the next ones by id after the instance's "
     "cursor, which wraps to the start after the last, so successive runs "
     "cover the whole store (the cursor is kept in PostgreSQL)."},
    {"memory.consolidate.INSTANCE.neighbors", NULL, "8",
     "Nearest memories looked up across the store for each one of a batch "
     "(at most 64); 0 for a plugin that judges each memory alone, such as "
     "decay: its runs then skip the vector search and read no vectors. "
     "The search is narrow (HNSW efSearch 32, not the store's 128): "
     "consolidators look at memories close to each other."},

    {"correlators", "mapping of instance name to correlator", "-",
     "Correlator plugin instances (kind correlator, SDK 1.2) and the streams "
     "whose committed events each one sees."},
    {"correlators.INSTANCE.streams", "sequence of stream names", "required",
     "Each committed event of these streams (as the stream took it in, "
     "before its processors) goes to the instance, after the commit."},
    {"correlators.INSTANCE.snapshot", "boolean", "true",
     "Keep the instance's state in Redis and read it back at start-up. "
     "Needs Redis (redis.url). A correlator with per-key state (SDK 1.3) "
     "writes the keys each event changed to the hash "
     "sophia:correlator:NODE:INSTANCE:keys before the event is "
     "acknowledged; an SDK 1.2 one writes its whole state (export_state, "
     "on the loop) under sophia:correlator:NODE:INSTANCE every "
     "snapshot_every and at shutdown."},
    {"correlators.INSTANCE.snapshot_every", NULL, "30s",
     "Seconds between whole-state snapshots (SDK 1.2 correlators only)."},

    {"plugins", NULL, "-", "Plugin modules and their instances."},
    {"plugins.path", "sequence of directories", "-",
     "Searched in order for modules, before the bundled plugins' "
     "directory (searched last)."},
    {"plugins.instances", "mapping of instance name to instance", "-",
     "Each instance loads one module under a name streams refer to."},
    {"plugins.instances.NAME.plugin", NULL, "required",
     "Module name (NAME.so on the path), never a path."},
    {"plugins.instances.NAME.options", "mapping", "-",
     "Checked against the plugin's own option table."},
    {"plugins.strict_modes", BOOL, "true",
     "Refuse modules (and their directories) writable by group/others or "
     "owned by another user than the daemon's or root."},
    {"plugins.init_timeout", NULL, "10",
     "A new plugin is first initialised in a child process; one slower than "
     "this is killed and refused."},

    {"streams", "mapping of stream name to stream", "-",
     "Event streams: POST /ingest/NAME feeds stream NAME."},
    {"streams.NAME.processor", NULL, "required",
     "A processor instance under plugins.instances (or processors)."},
    {"streams.NAME.processors", "sequence", "-",
     "A chain instead of one processor: instance names, and {filter: "
     "[predicates]} links anywhere; each link sees the events the one "
     "before it emitted (host->emit), or the event it processed when it "
     "emitted none."},
    {"streams.NAME.outputs", "sequence of instance names", "-",
     "Output instances (plugins of kind output) every event leaving the "
     "stream's processors, and each alert they raised for it, is delivered "
     "to; the event is acknowledged only once all of them took it (at "
     "least once). Each output has up to its max_inflight option (1..64, "
     "4 for the bundled outputs) batches out at once, so batches may reach "
     "a receiver out of order (max_inflight: 1 keeps strict order); the "
     "stream keeps up to batch_size x max_inflight of its largest output "
     "events in flight (at least 256, at most 4096)."},
    {"streams.NAME.queue_size", NULL, "10000",
     "Bounded queue; when full, ingest answers 503."},
    {"streams.NAME.batch_size", NULL, "256",
     "Events handed to the processor per loop turn."},
    {"streams.NAME.filter", "sequence of predicates", "-",
     "Every predicate must hold: {path: a.b, OP: value} with OP one of "
     "equals, not_equals, in, not_in, exists, gt, gte, lt, lte, matches "
     "(+ icase; a POSIX extended regular expression of at most 20000 nodes "
     "once its repetitions are expanded)."},
    {"streams.NAME.dedup_key", NULL, "-", "Dotted JSON path of the event's "
     "id."},
    {"streams.NAME.dedup_window", NULL, "300", "Ids remembered this long."},
    {"streams.NAME.max_attempts", NULL, "3",
     "Deliveries of an event (processor RETRY, or an effect that could not "
     "be made durable) before it goes to the stream's dead letter."},
    {"streams.NAME.retry_base", NULL, "0.1",
     "First wait before a retried event is delivered again (exponential "
     "back-off with full jitter)."},
    {"streams.NAME.retry_cap", NULL, "10", "Longest wait between two "
     "deliveries of a retried event."},
    {"streams.NAME.redis", NULL, "-",
     "Also read a Redis stream through a consumer group."},
    {"streams.NAME.redis.key", NULL, "-", "Stream key."},
    {"streams.NAME.redis.group", NULL, "-", "Consumer group."},
    {"streams.NAME.redis.consumer", NULL, "hostname-pid", "Consumer name."},
    {"streams.NAME.redis.field", NULL, "-", "Entry field holding the event "
     "JSON."},
    {"streams.NAME.redis.count", NULL, "100; 1000 durable",
     "Entries per read. A durable stream reads back what this node "
     "appended, a body at a time, so it reads more at once."},
    {"streams.NAME.redis.block", NULL, "1", "XREADGROUP block time (at most "
     "1.5s)."},
    {"streams.NAME.redis.claim_idle", NULL, "30",
     "Claim entries pending longer than this (dead consumers)."},
    {"streams.NAME.redis.dead_letter_after", NULL, "5",
     "Deliveries before an entry moves to KEY:dead."},
    {"streams.NAME.statsd", NULL, "-", "DogStatsD lines over UDP into this "
     "stream."},
    {"streams.NAME.statsd.listen", "HOST:PORT or PORT", "-",
     "A bare port is 127.0.0.1; a non-loopback address needs allow."},
    {"streams.NAME.statsd.allow", "sequence of CIDRs", "-",
     "Source networks accepted; others are dropped and counted."},
    {"streams.NAME.durable", BOOL, "true when Redis is configured",
     "Append each accepted body to a Redis Stream before answering 202, so "
     "a crash loses nothing; false = in-memory queue."},
    {"streams.NAME.retention", NULL, "-",
     "History a durable stream keeps for POST /api/streams/NAME/replay. "
     "Without it an entry is trimmed once every consumer group processed "
     "it; with it, once it is processed and outside the retention (past "
     "count or older than age, either one)."},
    {"streams.NAME.retention.count", NULL, "-",
     "Keep at most the newest N processed entries (approximate: Redis "
     "trims whole nodes, so a few more may stay)."},
    {"streams.NAME.retention.age", NULL, "-",
     "Keep processed entries younger than this (e.g. 24h), by their "
     "stream id's time."},

    {"hooks", NULL, "-", "Webhook endpoints."},
    {"hooks.slack", NULL, "-", "POST /hooks/slack."},
    {"hooks.slack.secret_env", NULL, "SOPHIA_SLACK_SIGNING_SECRET",
     "Variable holding the Slack signing secret; unset = 401."},
    {"hooks.slack.stream", NULL, "slack", "Stream the events go to."},
    {"hooks.slack.dedup_window", NULL, "1h",
     "Retries with an accepted event_id are dropped."},
    {"hooks.gong", NULL, "-", "POST /hooks/gong."},
    {"hooks.gong.secret_env", NULL, "SOPHIA_GONG_SECRET",
     "Variable holding the shared secret (Authorization: Bearer or "
     "X-Gong-Secret); unset = 401."},
    {"hooks.gong.stream", NULL, "gong", "Stream the events go to."},
    {"hooks.gong.allow_query_key", BOOL, "false",
     "Also accept the secret as ?key= (it ends up in access logs)."},
};

#define NDOCS (sizeof(docs) / sizeof(docs[0]))

static const key_doc *find(const char *path)
{
    for (size_t i = 0; i < NDOCS; i++)
        if (!strcmp(docs[i].path, path))
            return &docs[i];
    return NULL;
}

const char *sophia_conf_doc_find(const char *path)
{
    const key_doc *d = find(path);
    return d ? d->text : NULL;
}

/* roff: a leading '.' or '\'' would be a request, '\' an escape. */
static void roff_text(FILE *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", out);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else
            fputc(*s, out);
    }
}

typedef struct walk {
    FILE *out, *err;
    int problems;
    unsigned char seen[NDOCS];
} walk;

static void print_key(const char *path, const char *type, const char *def,
                      void *arg)
{
    walk *w = arg;
    const key_doc *d = find(path);
    if (!strchr(path, '.'))
        fprintf(w->out, ".SS %s\n", path);
    fputs(".TP\n.B ", w->out);
    roff_text(w->out, path);
    fputc('\n', w->out);
    if (!d) {
        w->problems++;
        if (w->err)
            fprintf(w->err, "sophia.yaml(5): key '%s' has no description in "
                            "core/conf/config_doc.c\n", path);
        fputs("UNDOCUMENTED\n", w->out);
        return;
    }
    w->seen[d - docs] = 1;
    const char *t = type ? type : d->type;
    fputs("Type: ", w->out);
    roff_text(w->out, t ? t : "see below");
    /* The loader's own default wins; one written here must agree with it. */
    if (def && strcmp(d->def, "-") && strcmp(d->def, def)) {
        w->problems++;
        if (w->err)
            fprintf(w->err, "sophia.yaml(5): core/conf/config_doc.c gives '%s' the "
                            "default '%s', the loader '%s'\n", path, d->def, def);
    }
    if (def || strcmp(d->def, "-")) {
        fputs("; default: ", w->out);
        roff_text(w->out, def ? def : d->def);
    }
    fputs(".\n.br\n", w->out);
    roff_text(w->out, d->text);
    fputc('\n', w->out);
}

static const char *const head =
    ".TH SOPHIA.YAML 5 \"\" \"sophiad " SOPHIA_VERSION "\" \"File Formats\"\n"
    ".SH NAME\n"
    "sophia.yaml \\- sophiad configuration file\n"
    ".SH SYNOPSIS\n"
    ".B /etc/sophia/sophia.yaml\n"
    ".SH DESCRIPTION\n"
    "The configuration of\n.BR sophiad (8),\n"
    "a YAML mapping of the sections below. Every key is optional unless\n"
    "marked required. An unknown key, a wrong type or a bad value is\n"
    "reported as FILE:LINE:COL and sophiad refuses to start (or, on\n"
    "SIGHUP, keeps the running configuration), so a typo never falls back\n"
    "to a default silently. Check a file with\n"
    ".BR \"sophiad \\-c FILE \\-\\-check\" .\n"
    ".PP\n"
    "Sizes are bytes or a number with k/KiB (1024), KB (1000), M/MiB, MB,\n"
    "G/GiB, GB. Durations are seconds or a number with ms, s, m, h or d.\n"
    "Relative paths are resolved against the file's directory. Secrets\n"
    "never live in the file: keys named secret_env name the environment\n"
    "variable that holds them. YAML anchors and aliases are refused.\n"
    ".PP\n"
    "NAME and INSTANCE below stand for names the file chooses (letters,\n"
    "digits, '_', '.', '\\-').\n"
    ".SH KEYS\n";

static const char *const tail =
    ".SH ENVIRONMENT\n"
    "Applied after the file:\n"
    ".TP\n.B SOPHIA_REDIS_URL\nreplaces redis.url; empty disables L2.\n"
    ".TP\n.B SOPHIA_PG_URL\nreplaces postgres.url; empty disables L3.\n"
    ".TP\n.B SOPHIA_LISTEN\nreplaces server.listen (\\-\\-listen wins).\n"
    ".TP\n.B SOPHIA_CLUSTER_REDIS_URL\nreplaces cluster.redis.\n"
    ".SH FILES\n"
    ".TP\n.I /etc/sophia/sophia.yaml\nthe packaged default.\n"
    ".TP\n.I /etc/default/sophia\nenvironment for sophiad.service.\n"
    ".SH SEE ALSO\n"
    ".BR sophiad (8)\n";

int sophia_conf_doc_man(FILE *out, FILE *err)
{
    walk w = {out, err, 0, {0}};
    fputs(head, out);
    sophia_conf_each_key(print_key, &w);
    for (size_t i = 0; i < NDOCS; i++) {
        if (w.seen[i])
            continue;
        w.problems++;
        if (err)
            fprintf(err, "sophia.yaml(5): core/conf/config_doc.c describes '%s', "
                         "which the loader does not accept\n", docs[i].path);
    }
    fputs(tail, out);
    return w.problems;
}
