/*
 * memory_synonyms - query expansion from a small synonym list kept as data
 * (share/memory_synonyms.txt), so "where does the Acme opportunity stand"
 * also looks for the memory that says "deal".
 *
 * Why expansion at query time, on our side: stored rows and vectors stay
 * what the text says (changing the list needs no re-index), and a
 * PostgreSQL synonym dictionary would have to be installed on the
 * database server. The file: one group per line, comma-separated words
 * or phrases that mean the same in a question; `#` starts a comment.
 * A question that contains a member (case-insensitive, on word
 * boundaries) gets the group as one concept: the text leg (memory.c)
 * matches any member, each a phrase, and scores the concept once with
 * the idf of all the rows it matches, the way a search engine scores a
 * synonym set as one term. The member's own words leave the question's
 * word list: "quarterly review" then no longer counts "review" again for
 * every security review, and "deal" a second time through "contract".
 */
#include "memory/memory_priv.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

#define SYN_MAX_LINE 1024
#define SYN_MAX_EXPANSION 4096 /* bytes of expansion per query */

typedef struct syn_group {
    char **terms; /* lower-case */
    size_t n;
} syn_group;

struct mem_syn {
    syn_group *g;
    size_t n, cap;
};

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static void group_free(syn_group *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->terms[i]);
    free(g->terms);
}

/* One line into a group; 0 on success or a blank line (g->n == 0). */
static int parse_line(char *line, syn_group *g)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    g->terms = NULL;
    g->n = 0;
    for (char *tok = strtok(line, ","); tok; tok = strtok(NULL, ",")) {
        char *t = trim(tok);
        if (!*t)
            continue;
        char **v = realloc(g->terms, (g->n + 1) * sizeof(*v));
        if (!v || !(v[g->n] = strdup(t))) {
            g->terms = v ? v : g->terms;
            group_free(g);
            return -1;
        }
        lower(v[g->n]);
        g->terms = v;
        g->n++;
    }
    return 0;
}

void mem_syn_free(mem_syn *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        group_free(&s->g[i]);
    free(s->g);
    free(s);
}

mem_syn *mem_syn_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    mem_syn *s = calloc(1, sizeof(*s));
    char line[SYN_MAX_LINE];
    int lineno = 0;
    while (s && fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line longer than %d bytes", path,
                     lineno, SYN_MAX_LINE - 2);
            mem_syn_free(s);
            s = NULL;
            break;
        }
        syn_group g;
        if (parse_line(line, &g) < 0)
            goto oom;
        if (g.n == 1) {
            snprintf(err, errlen, "%s:%d: a group needs two or more "
                     "comma-separated terms", path, lineno);
            group_free(&g);
            mem_syn_free(s);
            s = NULL;
            break;
        }
        if (g.n == 0)
            continue;
        if (s->n == s->cap) {
            size_t cap = s->cap ? 2 * s->cap : 32;
            syn_group *v = realloc(s->g, cap * sizeof(*v));
            if (!v) {
                group_free(&g);
                goto oom;
            }
            s->g = v;
            s->cap = cap;
        }
        s->g[s->n++] = g;
    }
    fclose(f);
    return s;
oom:
    snprintf(err, errlen, "out of memory");
    fclose(f);
    mem_syn_free(s);
    return NULL;
}

size_t mem_syn_groups(const mem_syn *s)
{
    return s ? s->n : 0;
}

static int is_word(char c)
{
    return isalnum((unsigned char)c) || (unsigned char)c >= 0x80;
}

/* Where lower-case `q` contains `term` with word boundaries on both
 * sides, from `from` on; NULL when nowhere. */
static const char *find_term(const char *q, const char *from, const char *term)
{
    size_t tl = strlen(term);
    for (const char *p = strstr(from, term); p; p = strstr(p + 1, term))
        if ((p == q || !is_word(p[-1])) && !is_word(p[tl]))
            return p;
    return NULL;
}

/* Appends `term` as a tsquery phrase ("price <-> cut": its words, split on
 * anything but letters and digits, so the text needs no quoting) on a line
 * of its own after the group's number; 0, or -1 when it does not fit. */
static int put_phrase(char *out, size_t *o, size_t group, const char *term)
{
    char buf[SYN_MAX_LINE * 5];
    size_t b = (size_t)snprintf(buf, sizeof(buf), "%zu\t", group), words = 0;
    for (const char *p = term; *p;) {
        while (*p && !is_word(*p))
            p++;
        if (!*p)
            break;
        if (words++)
            b += (size_t)snprintf(buf + b, sizeof(buf) - b, " <-> ");
        while (*p && is_word(*p) && b + 2 < sizeof(buf))
            buf[b++] = *p++;
    }
    if (!words)
        return 0;
    buf[b++] = '\n';
    if (*o + b > SYN_MAX_EXPANSION)
        return -1;
    memcpy(out + *o, buf, b);
    *o += b;
    return 0;
}

char *mem_syn_expand(const mem_syn *s, const char *query, char **rest)
{
    char *out = calloc(1, SYN_MAX_EXPANSION + 1);
    char *q = strdup(query);
    *rest = strdup(query);
    if (!out || !q || !*rest) {
        free(out);
        free(q);
        free(*rest);
        *rest = NULL;
        return NULL;
    }
    lower(q);
    size_t o = 0;
    for (size_t i = 0; s && i < s->n; i++) {
        const syn_group *g = &s->g[i];
        int hit = 0;
        for (size_t t = 0; t < g->n; t++)
            for (const char *p = find_term(q, q, g->terms[t]); p;
                 p = find_term(q, p + 1, g->terms[t])) {
                hit = 1; /* the group stands for these words now */
                memset(*rest + (p - q), ' ', strlen(g->terms[t]));
            }
        for (size_t t = 0; hit && t < g->n; t++)
            if (put_phrase(out, &o, i, g->terms[t]) < 0)
                break;
    }
    out[o] = '\0';
    free(q);
    return out;
}
