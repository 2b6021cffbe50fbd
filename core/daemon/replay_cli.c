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
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf/config.h"
#include "lib/diag.h"

#define POLL_MS 500

typedef struct replay_args {
    const char *config, *listen, *stream, *from, *to, *target, *token;
    const char *rate;
    int dry_run, cancel;
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
          "                      [-c FILE] [--listen HOST:PORT] [--token T]\n"
          "       sophiad replay STREAM --cancel [-c FILE] [--listen ...]\n\n"
          "Runs entries of STREAM's Redis history again through a running\n"
          "sophiad (POST /api/streams/STREAM/replay). FROM/TO: Redis stream\n"
          "ids (MS or MS-SEQ, - and + for the ends) or RFC 3339 times.\n"
          "--dry-run prints the actions as JSON lines and applies nothing;\n"
          "--target applies them through that processor instance and\n"
          "prints the progress until it ends (Ctrl-C cancels it there).\n"
          "--cancel stops the stream's running replay. --rate: events per\n"
          "second (default 1000). The address and token come from the\n"
          "configuration (-c, default config/sophia.yaml) unless given.\n",
          out);
}

static int parse(int argc, char **argv, replay_args *a)
{
    enum { O_FROM = 256, O_TO, O_DRY, O_TARGET, O_RATE, O_LISTEN, O_TOKEN,
           O_CANCEL };
    static const struct option opts[] = {
        {"from", required_argument, NULL, O_FROM},
        {"to", required_argument, NULL, O_TO},
        {"dry-run", no_argument, NULL, O_DRY},
        {"target", required_argument, NULL, O_TARGET},
        {"rate", required_argument, NULL, O_RATE},
        {"listen", required_argument, NULL, O_LISTEN},
        {"token", required_argument, NULL, O_TOKEN},
        {"cancel", no_argument, NULL, O_CANCEL},
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
        case O_CANCEL: a->cancel = 1; break;
        case 'c': a->config = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind + 1 != argc || !a->dry_run + !a->target + !a->cancel != 2) {
        fprintf(stderr, "sophiad replay: %s\n", optind + 1 != argc
                ? "name exactly one stream"
                : "say one of --dry-run, --target INSTANCE or --cancel");
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

/* Where the daemon is, and Ctrl-C: SIGINT is blocked and read from
 * `sigfd`, so a wait on the daemon (a dry run's answer, the progress
 * poll) notices it and cancels the replay instead of leaving it running
 * behind a client that is gone. */
typedef struct cli {
    char *host, *token;
    int port;
    char path[512]; /* /api/streams/STREAM/replay */
    int sigfd;      /* -1: not watched (the cancel request itself) */
    int cancelled;
} cli;

static int request(cli *c, const char *method, const char *body, answer *out);

/* The first Ctrl-C cancels the replay (what is waited on then ends with
 * state "cancelled"); a second one leaves at once. */
static void on_interrupt(cli *c)
{
    struct signalfd_siginfo si;
    if (read(c->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    if (c->cancelled)
        exit(130);
    c->cancelled = 1;
    fprintf(stderr, "sophiad replay: cancelling (Ctrl-C again to leave)\n");
    int sigfd = c->sigfd;
    c->sigfd = -1;
    answer a = {0};
    if (request(c, "DELETE", NULL, &a) == 0 && a.status != 200)
        fprintf(stderr, "sophiad replay: the cancel got HTTP %d\n", a.status);
    free(a.body);
    c->sigfd = sigfd;
}

/* Waits up to ms for `fd` to be readable (-1: no fd, just the wait),
 * handling Ctrl-C meanwhile. 1 readable, 0 timed out or interrupted. */
static int wait_for(cli *c, int fd, int ms)
{
    struct pollfd p[2] = {{fd, POLLIN, 0}, {c->sigfd, POLLIN, 0}};
    int n = poll(p, 2, ms);
    if (n > 0 && (p[1].revents & POLLIN))
        on_interrupt(c);
    return n > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR));
}

/* The answer to the end (Connection: close), into *buf. */
static int read_answer(cli *c, int fd, char **buf, size_t *len)
{
    FILE *in = open_memstream(buf, len);
    char chunk[65536];
    ssize_t r = 1;
    while (r > 0) {
        if (!wait_for(c, fd, -1))
            continue;
        if ((r = read(fd, chunk, sizeof(chunk))) > 0)
            fwrite(chunk, 1, (size_t)r, in);
    }
    fclose(in);
    return r < 0 ? -1 : 0;
}

/* One request to c->path (or /api/stats for a GET); 0 with the answer,
 * or -1 (said on stderr). */
static int request(cli *c, const char *method, const char *body, answer *out)
{
    int fd = dial(c->host, c->port);
    if (fd < 0) {
        fprintf(stderr, "sophiad replay: cannot connect to %s:%d (is sophiad "
                "running there?)\n", c->host, c->port);
        return -1;
    }
    char *head = NULL;
    size_t hlen = 0;
    FILE *h = open_memstream(&head, &hlen);
    fprintf(h, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
            method, strcmp(method, "GET") ? c->path : "/api/stats");
    if (c->token)
        fprintf(h, "Authorization: Bearer %s\r\n", c->token);
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
    if (!rc)
        rc = read_answer(c, fd, &buf, &len);
    close(fd);
    char *sep = buf ? strstr(buf, "\r\n\r\n") : NULL;
    if (rc || !sep || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) {
        fprintf(stderr, "sophiad replay: no HTTP answer from %s:%d\n",
                c->host, c->port);
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
static int follow(cli *c, const char *stream)
{
    for (;;) {
        wait_for(c, -1, POLL_MS);
        answer a = {0};
        if (request(c, "GET", NULL, &a) < 0)
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

/* What the daemon answered, on stdout (a dry run's lines, a cancel's
 * state) or as an error; the exit code. */
static int run(cli *c, const replay_args *a)
{
    char *body = a->cancel ? NULL : request_body(a);
    answer ans = {0};
    int rc = request(c, a->cancel ? "DELETE" : "POST", body, &ans) < 0;
    if (!rc && ans.status != 200 && ans.status != 202) {
        say_error(&ans);
        rc = 1;
    } else if (!rc && (a->dry_run || a->cancel)) {
        fwrite(ans.body, 1, ans.len, stdout);
        rc = c->cancelled; /* a dry run cut short is not a success */
    } else if (!rc) {
        rc = follow(c, a->stream);
    }
    free(ans.body);
    free(body);
    return rc;
}

int sophia_replay_cli(int argc, char **argv)
{
    replay_args a = {0};
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    cli c = {.sigfd = -1};
    if (where(&a, &c.host, &c.port, &c.token) < 0)
        return 1;
    snprintf(c.path, sizeof(c.path), "/api/streams/%s/replay", a.stream);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    if (!a.cancel && sigprocmask(SIG_BLOCK, &mask, NULL) == 0)
        c.sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
    rc = run(&c, &a);
    if (c.sigfd >= 0)
        close(c.sigfd);
    free(c.host);
    free(c.token);
    return rc;
}
