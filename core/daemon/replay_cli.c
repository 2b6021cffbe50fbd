/*
 * replay_cli - `sophiad replay STREAM ...`: see replay_cli.h.
 *
 * A plain blocking HTTP/1.1 client (one request per connection,
 * `Connection: close`, the answer read to the end): the command runs
 * outside the daemon, has nothing else to do while it waits, and the
 * daemon's own listener is the only server it talks to, so neither a loop
 * nor an HTTP library is worth having here. The address and the bearer
 * token come from the same configuration the daemon reads (server.listen
 * and the variable server.tokens names, with SOPHIA_LISTEN and --listen
 * on top), so on the daemon's host `sophiad replay` needs no flags.
 */
#include "daemon/replay_cli.h"

#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf/config.h"
#include "lib/diag.h"

#define POLL_US 500000

typedef struct replay_args {
    const char *config, *listen, *stream, *from, *to, *target, *token;
    const char *rate;
    int dry_run;
} replay_args;

typedef struct answer {
    int status;
    char *body; /* NUL-terminated */
    size_t len;
} answer;

static void usage(FILE *out)
{
    fputs("usage: sophiad replay STREAM [--from ID|TIME] [--to ID|TIME]\n"
          "                      (--dry-run | --target INSTANCE) [--rate N]\n"
          "                      [-c FILE] [--listen HOST:PORT] [--token T]\n\n"
          "Runs entries of STREAM's Redis history again through a running\n"
          "sophiad (POST /api/streams/STREAM/replay). FROM/TO: Redis stream\n"
          "ids (MS or MS-SEQ, - and + for the ends) or RFC 3339 times.\n"
          "--dry-run prints the actions as JSON lines and applies nothing;\n"
          "--target applies them through that processor instance and\n"
          "prints the progress until it ends. --rate: events per second\n"
          "(default 1000). The address and token come from the\n"
          "configuration (-c, default config/sophia.yaml) unless given.\n",
          out);
}

static int parse(int argc, char **argv, replay_args *a)
{
    enum { O_FROM = 256, O_TO, O_DRY, O_TARGET, O_RATE, O_LISTEN, O_TOKEN };
    static const struct option opts[] = {
        {"from", required_argument, NULL, O_FROM},
        {"to", required_argument, NULL, O_TO},
        {"dry-run", no_argument, NULL, O_DRY},
        {"target", required_argument, NULL, O_TARGET},
        {"rate", required_argument, NULL, O_RATE},
        {"listen", required_argument, NULL, O_LISTEN},
        {"token", required_argument, NULL, O_TOKEN},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    a->config = "config/sophia.yaml";
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case O_FROM: a->from = optarg; break;
        case O_TO: a->to = optarg; break;
        case O_DRY: a->dry_run = 1; break;
        case O_TARGET: a->target = optarg; break;
        case O_RATE: a->rate = optarg; break;
        case O_LISTEN: a->listen = optarg; break;
        case O_TOKEN: a->token = optarg; break;
        case 'c': a->config = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind + 1 != argc || (!a->dry_run && !a->target)) {
        fprintf(stderr, "sophiad replay: %s\n", optind + 1 != argc
                ? "name exactly one stream"
                : "say --dry-run or --target INSTANCE");
        usage(stderr);
        return 2;
    }
    a->stream = argv[optind];
    return -1;
}

/* The address and token: flags first, then the configuration file. */
static int where(replay_args *a, char **host, int *port, char **token)
{
    sophia_conf *c = NULL;
    if (!a->listen || !a->token) {
        sophia_diag d;
        sophia_diag_init(&d);
        c = sophia_conf_load(a->config, &d);
        if (!c && !a->listen) {
            sophia_diag_print(&d, stderr);
            fprintf(stderr, "sophiad replay: cannot read %s; give --listen\n",
                    a->config);
            sophia_diag_free(&d);
            return -1;
        }
        sophia_diag_free(&d);
        if (c)
            sophia_conf_apply_env(c, a->listen);
    }
    const char *listen = a->listen ? a->listen : c->server.listen;
    int rc = sophia_conf_split_listen(listen, host, port);
    if (rc < 0)
        fprintf(stderr, "sophiad replay: '%s' is not HOST:PORT\n", listen);
    const char *tokens = a->token ? a->token : c ? c->server.tokens : NULL;
    *token = tokens ? strndup(tokens, strcspn(tokens, ",")) : NULL;
    sophia_conf_free(c);
    return rc;
}

static int dial(const char *host, int port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res))
        return -1;
    int fd = -1;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One request; 0 with the answer, or -1 (said on stderr). */
static int request(const char *host, int port, const char *token,
                   const char *method, const char *path, const char *body,
                   answer *out)
{
    int fd = dial(host, port);
    if (fd < 0) {
        fprintf(stderr, "sophiad replay: cannot connect to %s:%d (is sophiad "
                "running there?)\n", host, port);
        return -1;
    }
    char *head = NULL;
    size_t hlen = 0;
    FILE *h = open_memstream(&head, &hlen);
    fprintf(h, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
            method, path);
    if (token)
        fprintf(h, "Authorization: Bearer %s\r\n", token);
    if (body)
        fprintf(h, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                strlen(body));
    fputs("\r\n", h);
    fclose(h);
    int rc = write_all(fd, head, hlen) < 0 ||
             (body && write_all(fd, body, strlen(body)) < 0) ? -1 : 0;
    free(head);
    char *buf = NULL;
    size_t len = 0;
    FILE *in = open_memstream(&buf, &len);
    char chunk[65536];
    ssize_t r;
    while (!rc && (r = read(fd, chunk, sizeof(chunk))) > 0)
        fwrite(chunk, 1, (size_t)r, in);
    fclose(in);
    close(fd);
    char *sep = buf ? strstr(buf, "\r\n\r\n") : NULL;
    if (rc || !sep || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) {
        fprintf(stderr, "sophiad replay: no HTTP answer from %s:%d\n", host,
                port);
        free(buf);
        return -1;
    }
    out->len = len - (size_t)(sep + 4 - buf);
    out->body = malloc(out->len + 1);
    memcpy(out->body, sep + 4, out->len);
    out->body[out->len] = 0;
    free(buf);
    return 0;
}

/* "HTTP 404: no stream 'x'" from the JSON error, else the raw body. */
static void say_error(const answer *a)
{
    json_t *o = json_loads(a->body, 0, NULL);
    const char *msg = json_string_value(
        json_object_get(json_object_get(o, "error"), "message"));
    fprintf(stderr, "sophiad replay: HTTP %d: %s\n", a->status,
            msg ? msg : a->body);
    json_decref(o);
}

static char *request_body(const replay_args *a)
{
    json_t *o = json_object();
    if (a->from)
        json_object_set_new(o, "from", json_string(a->from));
    if (a->to)
        json_object_set_new(o, "to", json_string(a->to));
    if (a->dry_run)
        json_object_set_new(o, "dry_run", json_true());
    if (a->target)
        json_object_set_new(o, "target", json_string(a->target));
    if (a->rate)
        json_object_set_new(o, "rate", json_real(strtod(a->rate, NULL)));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Polls /api/stats until the stream's replay ended; its exit code. */
static int follow(const char *host, int port, const char *token,
                  const char *stream)
{
    for (;;) {
        usleep(POLL_US);
        answer a = {0};
        if (request(host, port, token, "GET", "/api/stats", NULL, &a) < 0)
            return 1;
        json_t *o = json_loads(a.body, 0, NULL);
        json_t *rp = json_object_get(
            json_object_get(json_object_get(o, "streams"), stream), "replay");
        const char *state = json_string_value(json_object_get(rp, "state"));
        int ended = !state || (strcmp(state, "counting") &&
                               strcmp(state, "running"));
        if (rp) {
            char *line = json_dumps(rp, JSON_COMPACT);
            fprintf(ended ? stdout : stderr, "%s\n", line);
            free(line);
        }
        int ok = state && !strcmp(state, "done");
        json_decref(o);
        free(a.body);
        if (ended)
            return ok ? 0 : 1;
    }
}

int sophia_replay_cli(int argc, char **argv)
{
    replay_args a = {0};
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    char *host = NULL, *token = NULL;
    int port;
    if (where(&a, &host, &port, &token) < 0)
        return 1;
    char path[512], *body = request_body(&a);
    snprintf(path, sizeof(path), "/api/streams/%s/replay", a.stream);
    answer ans = {0};
    rc = request(host, port, token, "POST", path, body, &ans) < 0 ? 1 : 0;
    if (!rc && ans.status != 200 && ans.status != 202) {
        say_error(&ans);
        rc = 1;
    } else if (!rc && a.dry_run) {
        fwrite(ans.body, 1, ans.len, stdout);
    } else if (!rc) {
        rc = follow(host, port, token, a.stream);
    }
    free(ans.body);
    free(body);
    free(host);
    free(token);
    return rc;
}
