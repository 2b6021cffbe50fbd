/*
 * plugin_probe - see plugin_probe.h.
 *
 * One child tries the instances in order and writes a record before and
 * after each ("L k", then "I file" right before init(), "D k"), and "E"
 * when all are through. Whatever record came last when the child died
 * says whose fault it was. After a crash the remaining instances are
 * tried in a fresh child, so one --check run names every crashing plugin.
 *
 * The child resets the fatal signals to their defaults (a sanitizer's
 * handler would otherwise turn SIGSEGV into an exit status), points
 * stdout/stderr at /dev/null (a plugin's own messages are printed again
 * when the daemon loads it for real; a sanitizer's crash report from the
 * child is not the daemon's), and leaves with _exit so nothing of the
 * parent's (stdio buffers, atexit handlers, LeakSanitizer) runs twice.
 */
#include "plugin/plugin_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"

#define REAP_POLL_US 1000

struct sophia_probe {
    const sophia_conf *c;
    const sophia_plugin_set *old;
    const sophia_host *host;
    size_t *todo; /* indices into c->instances */
    size_t ntodo, next; /* next: first position not yet settled */
    pid_t pid;
    int fd;
    char line[PATH_MAX + 32]; /* the record being read */
    size_t len;
    char last;    /* kind of the last record: 0, 'L', 'I', 'D', 'E' */
    size_t cur;   /* position in todo of the last 'L' */
    char file[PATH_MAX];
    int eof;
    int64_t deadline_us;
    unsigned char *crashed;
    sophia_diag *diag;
    int failures;
    /* asynchronous only */
    struct event *rd, *tick;
    sophia_probe_done done;
    void *arg;
    sophia_diag own;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void arm_deadline(sophia_probe *p)
{
    double t = p->c->plugin_init_timeout > 0 ? p->c->plugin_init_timeout : 10;
    p->deadline_us = mono_us() + (int64_t)(t * 1e6);
}

/* ---------------------------------------------------------- the child */

/* SIG_DFL through the system call itself: sanitizers intercept signal()
 * and sigaction() and keep their own SIGSEGV handler, which would turn
 * the crash into "exit status 1". The kernel's struct has no room for
 * glibc's larger sigset, hence the local layout. */
static void default_action(int sig)
{
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        unsigned long mask;
    } ksa = {SIG_DFL, 0, NULL, 0};
    if (syscall(SYS_rt_sigaction, sig, &ksa, NULL, sizeof(ksa.mask)) < 0)
        signal(sig, SIG_DFL);
}

static void child_main(const sophia_probe *p, int fd)
{
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
                               SIGPIPE, SIGTERM, SIGINT, SIGHUP};
    /* Dies with the daemon, and holds none of its sockets (a hung child
     * must not keep the listening port after a kill -9 of the parent). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (fd > STDERR_FILENO + 1)
        close_range(STDERR_FILENO + 1, (unsigned)fd - 1, 0);
    close_range((unsigned)fd + 1, ~0u, 0);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
    }
    /* The parent's libevent signal pipe must not hear the child's. */
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        default_action(sigs[i]);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (size_t k = p->next; k < p->ntodo; k++) {
        dprintf(fd, "L %zu\n", k);
        sophia_plugin_trial_load(p->c, &p->c->instances[p->todo[k]], p->host,
                                 p->old, fd);
        dprintf(fd, "D %zu\n", k);
    }
    dprintf(fd, "E\n");
    _exit(0);
}

static int spawn(sophia_probe *p)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    p->len = 0;
    p->last = 0;
    p->eof = 0;
    p->file[0] = '\0';
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        child_main(p, fds[1]);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    p->pid = pid;
    p->fd = fds[0];
    arm_deadline(p);
    return 0;
}

/* ---------------------------------------------------- reading records */

static void on_record(sophia_probe *p, const char *r)
{
    if (r[0] == 'L' && r[1] == ' ') {
        size_t k = strtoul(r + 2, NULL, 10);
        if (k >= p->next && k < p->ntodo) {
            p->cur = k;
            p->last = 'L';
            p->file[0] = '\0';
            arm_deadline(p); /* the timeout is per instance */
        }
    } else if (r[0] == 'I' && r[1] == ' ') {
        snprintf(p->file, sizeof(p->file), "%s", r + 2);
        p->last = 'I';
    } else if (r[0] == 'D' || r[0] == 'E') {
        p->last = r[0];
    }
}

static void feed(sophia_probe *p, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '\n') {
            if (p->len + 1 < sizeof(p->line))
                p->line[p->len++] = buf[i];
            continue;
        }
        p->line[p->len] = '\0';
        on_record(p, p->line);
        p->len = 0;
    }
}

/* Reads what is there; 1 at end of file. */
static int drain(sophia_probe *p)
{
    char buf[1024];
    for (;;) {
        ssize_t n = read(p->fd, buf, sizeof(buf));
        if (n > 0) {
            feed(p, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        return 1; /* EOF, or an error that will not go away */
    }
}

/* ----------------------------------------------------------- verdicts */

static const char *signame(int sig, char *buf, size_t cap)
{
    static const struct {
        int sig;
        const char *name;
    } names[] = {{SIGSEGV, "SIGSEGV"}, {SIGBUS, "SIGBUS"},
                 {SIGABRT, "SIGABRT"}, {SIGILL, "SIGILL"},
                 {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"},
                 {SIGTERM, "SIGTERM"}, {SIGPIPE, "SIGPIPE"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].sig == sig)
            return names[i].name;
    snprintf(buf, cap, "signal %d", sig);
    return buf;
}

static void report(sophia_probe *p, int status, int timed_out)
{
    const sophia_conf_instance *ci = &p->c->instances[p->todo[p->cur]];
    char how[64], sb[24], file[PATH_MAX + 4] = "";
    if (p->file[0])
        snprintf(file, sizeof(file), " (%s)", p->file);
    const char *where = p->last == 'I' ? "in init" : "while loading";
    if (timed_out) {
        sophia_diag_add(p->diag, p->c->file, ci->line, ci->col,
                        "instance '%s': plugin '%s'%s hung %s: no answer "
                        "within %g s (plugins.init_timeout), killed",
                        ci->name, ci->plugin, file, where,
                        p->c->plugin_init_timeout);
    } else {
        if (WIFSIGNALED(status))
            snprintf(how, sizeof(how), "%s",
                     signame(WTERMSIG(status), sb, sizeof(sb)));
        else
            snprintf(how, sizeof(how), "exit status %d",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        sophia_diag_add(p->diag, p->c->file, ci->line, ci->col,
                        "instance '%s': plugin '%s'%s crashed %s: %s",
                        ci->name, ci->plugin, file, where, how);
    }
    if (p->crashed)
        p->crashed[p->todo[p->cur]] = 1;
    p->failures++;
}

/* The child is reaped: judge it and say where to go on from. */
static void settle(sophia_probe *p, int status, int timed_out)
{
    close(p->fd);
    p->fd = -1;
    p->pid = 0;
    if (!timed_out && p->last == 'E' && WIFEXITED(status) &&
        WEXITSTATUS(status) == 0) {
        p->next = p->ntodo;
        return;
    }
    if (p->last == 'L' || p->last == 'I') {
        report(p, status, timed_out);
        p->next = p->cur + 1;
        return;
    }
    /* Died between two instances: nothing to blame a plugin for. */
    sophia_warn("plugin", "msg=\"plugin probe child died between plugins; not trying the rest\" status=%d",
                status);
    p->next = p->ntodo;
}

/* -------------------------------------------------------------- setup */

static sophia_probe *probe_new(const sophia_conf *c, const sophia_conf *old_conf,
                               const sophia_plugin_set *old,
                               const sophia_host *host)
{
    sophia_probe *p = calloc(1, sizeof(*p));
    if (!p || (c->ninstances &&
               !(p->todo = calloc(c->ninstances, sizeof(*p->todo))))) {
        free(p);
        return NULL;
    }
    p->c = c;
    p->old = old;
    p->host = host;
    p->fd = -1;
    for (size_t i = 0; i < c->ninstances; i++)
        if (!old || !sophia_plugin_reusable(c, &c->instances[i], old_conf, old))
            p->todo[p->ntodo++] = i;
    return p;
}

static void probe_free(sophia_probe *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (p->fd >= 0)
        close(p->fd);
    if (p->rd)
        event_free(p->rd);
    if (p->tick)
        event_free(p->tick);
    if (p->diag == &p->own)
        sophia_diag_free(&p->own);
    free(p->todo);
    free(p);
}

/* Kills a child past its deadline; 1 and *status once it is reaped. */
static int reap(sophia_probe *p, int *status, int *timed_out)
{
    *timed_out = 0;
    pid_t r = waitpid(p->pid, status, WNOHANG);
    if (r == p->pid)
        return 1;
    if (mono_us() < p->deadline_us)
        return 0;
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, status, 0) < 0 && errno == EINTR)
        ;
    *timed_out = 1;
    return 1;
}

/* -------------------------------------------------------------- sync */

static void wait_sync(sophia_probe *p)
{
    int status = 0, timed_out = 0;
    for (;;) {
        if (!p->eof) {
            int64_t left = (p->deadline_us - mono_us()) / 1000;
            struct pollfd pf = {p->fd, POLLIN, 0};
            int n = poll(&pf, 1, left > 0 ? (int)(left < 100 ? left : 100) : 0);
            if (n > 0)
                p->eof = drain(p);
        } else {
            struct timespec ts = {0, REAP_POLL_US * 1000};
            nanosleep(&ts, NULL);
        }
        if ((p->eof || mono_us() >= p->deadline_us) &&
            reap(p, &status, &timed_out))
            break;
    }
    settle(p, status, timed_out);
}

int sophia_plugin_probe_sync(const sophia_conf *c, const sophia_conf *old_conf,
                             const sophia_plugin_set *old,
                             const sophia_host *host, unsigned char *crashed,
                             sophia_diag *diag)
{
    sophia_probe *p = probe_new(c, old_conf, old, host);
    if (!p)
        return 0;
    p->crashed = crashed;
    p->diag = diag;
    while (p->next < p->ntodo) {
        if (spawn(p) < 0) {
            sophia_warn("plugin", "msg=\"cannot fork to try plugins first; loading them directly\" err=%d",
                        errno);
            break;
        }
        wait_sync(p);
    }
    int failures = p->failures;
    probe_free(p);
    return failures;
}

/* ------------------------------------------------------------- async */

static void finish_or_respawn(sophia_probe *p);

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_probe *p = arg;
    int status = 0, timed_out = 0;
    if (!p->eof && mono_us() < p->deadline_us) {
        struct timeval tv = {0, 0};
        int64_t left = p->deadline_us - mono_us();
        tv.tv_sec = left / 1000000;
        tv.tv_usec = left % 1000000;
        evtimer_add(p->tick, &tv); /* a record moved the deadline */
        return;
    }
    if (!reap(p, &status, &timed_out)) {
        struct timeval tv = {0, REAP_POLL_US};
        evtimer_add(p->tick, &tv);
        return;
    }
    event_del(p->rd);
    settle(p, status, timed_out);
    finish_or_respawn(p);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_probe *p = arg;
    if (!drain(p))
        return;
    p->eof = 1;
    event_del(p->rd);
    struct timeval tv = {0, 0};
    evtimer_add(p->tick, &tv); /* reap now */
}

/* Starts a child for what is left; 0, or -1 when nothing could start. */
static int arm(sophia_probe *p)
{
    if (spawn(p) < 0)
        return -1;
    if (p->rd)
        event_free(p->rd);
    p->rd = event_new(event_get_base(p->tick), p->fd, EV_READ | EV_PERSIST,
                      on_readable, p);
    if (!p->rd)
        return -1;
    event_add(p->rd, NULL);
    double t = p->c->plugin_init_timeout > 0 ? p->c->plugin_init_timeout : 10;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    evtimer_add(p->tick, &tv);
    return 0;
}

static void finish_or_respawn(sophia_probe *p)
{
    if (p->next < p->ntodo && arm(p) == 0)
        return;
    p->done(p->diag, p->arg);
    probe_free(p);
}

sophia_probe *sophia_plugin_probe_start(const sophia_conf *c,
                                        const sophia_conf *old_conf,
                                        const sophia_plugin_set *old,
                                        const sophia_host *host,
                                        struct event_base *base,
                                        sophia_probe_done done, void *arg)
{
    sophia_probe *p = probe_new(c, old_conf, old, host);
    if (!p)
        return NULL;
    sophia_diag_init(&p->own);
    p->diag = &p->own;
    p->done = done;
    p->arg = arg;
    p->tick = evtimer_new(base, on_tick, p);
    if (p->ntodo == 0 || !p->tick || arm(p) < 0) {
        if (p->ntodo && p->tick)
            sophia_warn("plugin", "msg=\"cannot fork to try plugins first; loading them directly\" err=%d",
                        errno);
        probe_free(p);
        return NULL;
    }
    return p;
}

void sophia_probe_cancel(sophia_probe *p)
{
    if (p)
        probe_free(p);
}
