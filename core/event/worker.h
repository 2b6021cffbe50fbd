/*
 * worker - a small pool of threads for work the loop must not do itself
 * (vector search, index builds, consolidation), whose results come back on
 * the loop.
 *
 * A job is two functions and an argument: `work(arg)` runs on some worker
 * thread, then `done(arg, 0)` runs on the loop thread, in a later loop
 * turn, never inside sophia_workers_submit. So `arg` is the hand-off: the
 * worker fills it, the loop reads it, and nothing else is shared unless the
 * caller locks it. Jobs start in submission order; with more than one
 * thread they may finish in any order.
 *
 * Completion uses a pipe: a worker appends the finished job to a list
 * under a mutex and writes one byte when the list was empty; a libevent
 * read event on the other end runs the `done` callbacks. This needs no
 * evthread_use_pthreads() (which would put locks on every libevent call in
 * the process) and coalesces wake-ups when many jobs finish at once.
 *
 * A pool knows nothing about what its jobs call: whoever creates it may pass
 * a thread-init hook, run once on each new thread before its first job
 * (memory uses it to keep faiss single-threaded inside each worker). That
 * keeps this layer below the libraries its jobs use.
 *
 * sophia_workers_free joins the threads after the running jobs finish;
 * jobs still queued never run their `work` and get done(arg, 1)
 * ("cancelled") so their owners can release `arg`; finished jobs get
 * done(arg, 0) as usual.
 */
#ifndef SOPHIA_WORKER_H
#define SOPHIA_WORKER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct sophia_workers sophia_workers;

typedef void (*sophia_work_fn)(void *arg);
typedef void (*sophia_done_fn)(void *arg, int cancelled);
/* Runs on each worker thread as it starts, before any job. */
typedef void (*sophia_thread_init_fn)(void *arg);

typedef struct sophia_workers_stats {
    unsigned threads;
    size_t queued;    /* waiting for a thread */
    size_t running;
    uint64_t done;    /* jobs whose done() ran */
} sophia_workers_stats;

/* nthreads in 1..64. thread_init may be NULL; init_arg is passed to it
 * and must outlive the pool. NULL on failure (logged). */
sophia_workers *sophia_workers_new(struct event_base *base, unsigned nthreads,
                                   const char *name,
                                   sophia_thread_init_fn thread_init,
                                   void *init_arg);
void sophia_workers_free(sophia_workers *w);

/* Queues a job. done may be NULL. Returns 0, SOPHIA_ENOMEM, or
 * SOPHIA_EUNAVAIL while being freed. */
int sophia_workers_submit(sophia_workers *w, sophia_work_fn work,
                          sophia_done_fn done, void *arg);

void sophia_workers_get_stats(sophia_workers *w, sophia_workers_stats *out);

#endif
