/*
 * redis_reply - see redis_reply.h.
 *
 * The root object sits in the arena's header; every object and string
 * after it is carved from the header's space, then from chunks chained to
 * it, each twice the last. Each object is preceded by one word: the
 * root's holds its arena's address, every other's is 0, so freeObject
 * frees a root with all its parts and does nothing for a part (hiredis
 * frees only roots; a part passed in by mistake then costs no double
 * free). A child finds its arena through its task's parents: the root
 * task's object is the arena's root.
 */
#include "event/redis_reply.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_FIRST 512     /* the header's space: most replies are tiny */
#define ARENA_CHUNK 8192    /* the first chunk after it; then doubling */
#define ARENA_CHUNK_MAX (1 << 20)

typedef struct chunk {
    struct chunk *next; /* its space follows, 8-byte aligned */
} chunk;

typedef struct arena {
    chunk *chunks;      /* chunks after the header's space, newest first */
    char *at, *end;     /* free space left in the newest block */
    size_t next_cap;    /* the next chunk's size */
    uintptr_t tag;      /* the root's word: this arena's address */
    redisReply root;
    /* ARENA_FIRST or more bytes of space follow */
} arena;

#define WORD sizeof(uintptr_t)

/* free_object reads the word before a root as its arena's `tag`. */
_Static_assert(offsetof(arena, root) == offsetof(arena, tag) + WORD,
               "the root's word is the arena's tag");

static size_t round8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* `size` bytes preceded by a zero word, from the arena; NULL when out of
 * memory (hiredis then fails the reply). */
static void *arena_alloc(arena *a, size_t size)
{
    size_t need = WORD + round8(size);
    if ((size_t)(a->end - a->at) < need) {
        size_t cap = a->next_cap > need ? a->next_cap : need;
        chunk *c = malloc(sizeof(chunk) + cap);
        if (!c)
            return NULL;
        c->next = a->chunks;
        a->chunks = c;
        a->at = (char *)(c + 1);
        a->end = a->at + cap;
        if (a->next_cap < ARENA_CHUNK_MAX)
            a->next_cap *= 2;
    }
    uintptr_t *w = (uintptr_t *)a->at;
    a->at += need;
    *w = 0;
    return w + 1;
}

/* A zeroed object of `type` (hiredis' own functions set it, not the
 * task's: a nil bulk's task says string) with `extra` bytes of its own at
 * *part (its text or element array), linked into its parent; a root
 * makes the arena, whose first block then holds a lone reply whole. */
static redisReply *new_object(const redisReadTask *task, int type,
                              size_t extra, void **part)
{
    redisReply *r;
    if (!task->parent) {
        size_t space = round8(extra) > ARENA_FIRST ? round8(extra)
                                                   : ARENA_FIRST;
        arena *a = malloc(sizeof(arena) + space);
        if (!a)
            return NULL;
        a->chunks = NULL;
        a->at = (char *)(a + 1);
        a->end = a->at + space;
        a->next_cap = ARENA_CHUNK;
        a->tag = (uintptr_t)a;
        r = &a->root;
        *part = a->at;
        a->at += round8(extra);
    } else {
        const redisReadTask *t = task->parent;
        while (t->parent)
            t = t->parent;
        arena *a = (arena *)((char *)t->obj - offsetof(arena, root));
        if (!(r = arena_alloc(a, sizeof(redisReply) + extra)))
            return NULL;
        *part = r + 1;
        ((redisReply *)task->parent->obj)->element[task->idx] = r;
    }
    *r = (redisReply){.type = type};
    return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    void *part;
    redisReply *r = new_object(task, task->type, len + 1, &part);
    if (!r)
        return NULL;
    r->str = part;
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    size_t size = n * sizeof(redisReply *);
    void *part;
    redisReply *r = new_object(task, REDIS_REPLY_ARRAY, size, &part);
    if (!r)
        return NULL;
    if (n) {
        r->element = part;
        memset(part, 0, size);
    }
    r->elements = n;
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    void *part;
    redisReply *r = new_object(task, REDIS_REPLY_INTEGER, 0, &part);
    if (r)
        r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    void *part;
    return new_object(task, REDIS_REPLY_NIL, 0, &part);
}

static void free_object(void *p)
{
    if (!p)
        return;
    uintptr_t w = ((const uintptr_t *)p)[-1];
    arena *a = (arena *)w;
    if (!w || &a->root != p)
        return; /* a part: freed with its root */
    while (a->chunks) {
        chunk *c = a->chunks;
        a->chunks = c->next;
        free(c);
    }
    free(a);
}

static const redisReplyObjectFunctions reply_fns = {
    create_string, create_array, create_integer, create_nil, free_object,
};

redisReplyObjectFunctions *sophia_redis_reply_fns(void)
{
    /* hiredis takes a non-const pointer but only reads the table */
    return (redisReplyObjectFunctions *)&reply_fns;
}
