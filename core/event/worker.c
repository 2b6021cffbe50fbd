/*
 * worker - see worker.h. One mutex guards both lists (queued and
 * finished); contention is a non-issue at the rate jobs arrive (each job is
 * at least a vector search), and one lock keeps the free path obvious.
 */
#include "event/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sophia/sdk.h>

#include "lib/log.h"

typedef struct job {
    sophia_work_fn work;
    sophia_done_fn done;
    void *arg;
    int cancelled;
    struct job *next;
} job;

typedef struct jlist {
    job *head, *tail;
    size_t n;
} jlist;

struct sophia_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    jlist queued, finished;
    size_t running;
    int stopping;
    uint64_t done_count;
    pthread_t *threads;
    unsigned nthreads;
    int pipe_r, pipe_w;
    struct event *ev;
    sophia_thread_init_fn thread_init;
    void *init_arg;
    char name[32];
};

static void jl_push(jlist *l, job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    l->n++;
}

static job *jl_pop(jlist *l)
{
    job *j = l->head;
    if (j) {
        l->head = j->next;
        if (!l->head)
            l->tail = NULL;
        l->n--;
    }
    return j;
}

static void wake_loop(sophia_workers *w)
{
    char b = 1;
    /* A full pipe already means "wake up"; EAGAIN is fine. */
    while (write(w->pipe_w, &b, 1) < 0 && errno == EINTR)
        ;
}

static void *thread_main(void *arg)
{
    sophia_workers *w = arg;
    if (w->thread_init)
        w->thread_init(w->init_arg);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stopping && !w->queued.head)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stopping)
            break;
        job *j = jl_pop(&w->queued);
        w->running++;
        pthread_mutex_unlock(&w->mu);
        j->work(j->arg);
        pthread_mutex_lock(&w->mu);
        w->running--;
        int was_empty = w->finished.head == NULL;
        jl_push(&w->finished, j);
        if (was_empty)
            wake_loop(w);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Runs the done callbacks of every finished job, outside the lock: a done
 * callback may submit more jobs. */
static void run_finished(sophia_workers *w)
{
    pthread_mutex_lock(&w->mu);
    jlist l = w->finished;
    memset(&w->finished, 0, sizeof(w->finished));
    pthread_mutex_unlock(&w->mu);
    job *j;
    while ((j = jl_pop(&l))) {
        if (j->done)
            j->done(j->arg, j->cancelled);
        free(j);
        w->done_count++;
    }
}

static void on_pipe(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    run_finished(arg);
}

static int make_pipe(sophia_workers *w)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    w->pipe_r = fds[0];
    w->pipe_w = fds[1];
    return 0;
}

sophia_workers *sophia_workers_new(struct event_base *base, unsigned nthreads,
                                   const char *name,
                                   sophia_thread_init_fn thread_init,
                                   void *init_arg)
{
    if (nthreads < 1 || nthreads > 64)
        return NULL;
    sophia_workers *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    snprintf(w->name, sizeof(w->name), "%s", name ? name : "workers");
    w->thread_init = thread_init;
    w->init_arg = init_arg;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->pipe_r = w->pipe_w = -1;
    w->threads = calloc(nthreads, sizeof(*w->threads));
    if (!w->threads || make_pipe(w) < 0 ||
        !(w->ev = event_new(base, w->pipe_r, EV_READ | EV_PERSIST, on_pipe, w)) ||
        event_add(w->ev, NULL) < 0) {
        sophia_error("worker", "msg=\"cannot create worker pool\" pool=%s", w->name);
        sophia_workers_free(w);
        return NULL;
    }
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&w->threads[i], NULL, thread_main, w) != 0) {
            sophia_error("worker", "msg=\"pthread_create failed\" pool=%s", w->name);
            sophia_workers_free(w);
            return NULL;
        }
        w->nthreads++;
    }
    return w;
}

void sophia_workers_free(sophia_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    /* Threads are gone: no lock needed from here on. */
    job *j;
    while ((j = jl_pop(&w->queued))) {
        j->cancelled = 1;
        jl_push(&w->finished, j);
    }
    run_finished(w);
    if (w->ev)
        event_free(w->ev);
    if (w->pipe_r >= 0)
        close(w->pipe_r);
    if (w->pipe_w >= 0)
        close(w->pipe_w);
    free(w->threads);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

int sophia_workers_submit(sophia_workers *w, sophia_work_fn work,
                          sophia_done_fn done, void *arg)
{
    job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        free(j);
        return SOPHIA_EUNAVAIL;
    }
    jl_push(&w->queued, j);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

void sophia_workers_get_stats(sophia_workers *w, sophia_workers_stats *out)
{
    pthread_mutex_lock(&w->mu);
    out->threads = w->nthreads;
    out->queued = w->queued.n;
    out->running = w->running;
    out->done = w->done_count;
    pthread_mutex_unlock(&w->mu);
}
