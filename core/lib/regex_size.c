/*
 * regex_size - see regex_size.h.
 */
#include "lib/regex_size.h"

#include <stdlib.h>
#include <string.h>

#define DEPTH 64 /* groups deeper than this count as too large */

typedef struct frame {
    size_t total; /* nodes of the group so far */
    size_t last;  /* nodes of its last item: what a repetition repeats */
} frame;

/* The bracket expression at p ('['): the byte after its ']', or NULL. */
static const char *bracket(const char *p)
{
    p++;
    if (*p == '^')
        p++;
    if (*p == ']') /* a leading ']' is a member */
        p++;
    for (; *p && *p != ']'; p++)
        if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
            char close = p[1];
            for (p += 2; *p && !(*p == close && p[1] == ']'); p++)
                ;
            if (!*p)
                return NULL;
            p++; /* onto the class's ']' */
        }
    return *p ? p + 1 : NULL;
}

/* The repeat count of "{n}", "{n,}" or "{n,m}" at p (after '{'): the
 * copies regcomp makes, and *end past the '}'; 0 when it is not one. */
static size_t bound(const char *p, const char **end)
{
    char *e;
    unsigned long n = strtoul(p, &e, 10), m = n;
    if (e == p)
        return 0;
    if (*e == ',') {
        const char *q = e + 1;
        m = *q == '}' ? n + 1 : strtoul(q, &e, 10);
        if (*q == '}')
            e = (char *)q;
    }
    if (*e != '}')
        return 0;
    *end = e + 1;
    return (m > n ? m : n) + 1;
}

/* lim + 1 when x passes it (saturating). */
static size_t cap(size_t x, size_t lim)
{
    return x > lim ? lim + 1 : x;
}

/* `f`'s last item repeated `copies` times; 1 when f passed lim. */
static int repeat(frame *f, size_t copies, size_t lim)
{
    size_t grown = f->last > lim / copies ? lim + 1 : f->last * copies;
    f->total = cap(f->total - f->last + grown, lim);
    f->last = grown;
    return f->total > lim;
}

size_t sophia_regex_size(const char *pattern, size_t limit)
{
    frame st[DEPTH + 1] = {{0, 0}};
    size_t d = 0;
    for (const char *p = pattern; p && *p;) {
        frame *f = &st[d];
        const char *next = p + 1;
        size_t atom = 1;
        switch (*p) {
        case '(':
            if (++d > DEPTH)
                return limit + 1;
            st[d] = (frame){0, 0};
            p = next;
            continue;
        case ')':
            if (d == 0) /* regcomp refuses it; count it as one */
                break;
            atom = st[d--].total + 1;
            f = &st[d];
            break;
        case '*':
        case '?':
            if (repeat(f, 2, limit))
                return limit + 1;
            p = next;
            continue;
        case '+':
            if (repeat(f, 3, limit)) /* "aa*" */
                return limit + 1;
            p = next;
            continue;
        case '{': {
            size_t copies = bound(next, &next);
            if (copies) {
                if (repeat(f, copies, limit))
                    return limit + 1;
                p = next;
                continue;
            }
            next = p + 1; /* a plain '{' */
            break;
        }
        case '|':
            f->last = 0;
            break;
        case '[':
            if (!(next = bracket(p))) /* unclosed: regcomp refuses it */
                next = p + strlen(p);
            break;
        case '\\':
            if (p[1])
                next = p + 2;
            break;
        default:
            break;
        }
        f->total = cap(f->total + atom, limit);
        f->last = *p == '|' ? 0 : atom;
        if (f->total > limit)
            return limit + 1;
        p = next;
    }
    size_t total = 0; /* groups left open too: regcomp refuses those */
    for (size_t i = 0; i <= d; i++)
        total = cap(total + st[i].total, limit);
    return total;
}
