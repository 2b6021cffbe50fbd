/*
 * config_yaml - pass 1 of the loader (config.c): libyaml's event parser
 * into our own node tree, with positions.
 *
 * Events rather than libyaml's document loader, so anchors and aliases are
 * refused as they appear (no alias is ever expanded: a "billion laughs"
 * file costs nothing), nesting stops at SOPHIA_CONF_MAX_DEPTH, and
 * duplicate mapping keys, which libyaml accepts silently, are marked for
 * the schema walker to report. A syntax error stops the parse: libyaml
 * cannot resume after one. Also the allocation helpers every part of the
 * loader uses (they abort on OOM, config.c says why).
 */
#include "conf/config_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SOPHIA_CONF_MAX_DEPTH 64

/* ---- small allocation helpers (abort on OOM, config.c says why) -------- */

void *conf_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("sophia: out of memory while loading configuration\n", stderr);
        abort();
    }
    return q;
}

char *conf_xstrndup(const char *s, size_t n)
{
    char *d = conf_xrealloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *conf_xstrdup(const char *s)
{
    return conf_xstrndup(s, strlen(s));
}

/* Arrays in the model carry no capacity, so they grow to the next power of
 * two whenever their length reaches one: amortized O(1) appends even for a
 * mapping with a million keys. */
void *conf_grow_array(void *arr, size_t n, size_t elem)
{
    if (n == 0 || (n & (n - 1)) == 0)
        arr = conf_xrealloc(arr, (n ? 2 * n : 1) * elem);
    return arr;
}

/* ---- the node tree ----------------------------------------------------- */

void conf_node_free(node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        conf_node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

int conf_is_null(const node *n)
{
    if (n->kind != NODE_SCALAR || !n->plain)
        return 0;
    const char *t = n->text;
    return n->len == 0 || !strcmp(t, "~") || !strcmp(t, "null") ||
           !strcmp(t, "Null") || !strcmp(t, "NULL");
}

const char *conf_kind_name(const node *n)
{
    if (n->kind == NODE_MAP)
        return "a mapping";
    if (n->kind == NODE_SEQ)
        return "a sequence";
    return conf_is_null(n) ? "nothing (null)" : "a scalar";
}

/* ---- loader state ------------------------------------------------------ */

/* Line and column of a byte offset, for reader errors that carry no mark. */
static void offset_pos(const loader *ld, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < ld->len; i++) {
        if (ld->buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static void report_syntax(loader *ld)
{
    yaml_parser_t *p = &ld->parser;
    int line = (int)p->problem_mark.line + 1;
    int col = (int)p->problem_mark.column + 1;
    const char *problem = p->problem ? p->problem : "unknown problem";

    ld->broken = 1;
    if (p->error == YAML_MEMORY_ERROR) {
        sophia_diag_add(ld->diag, ld->name, 0, 0, "out of memory parsing YAML");
    } else if (p->error == YAML_READER_ERROR) {
        offset_pos(ld, p->problem_offset, &line, &col);
        sophia_diag_add(ld->diag, ld->name, line, col,
                        "YAML syntax error: %s", problem);
    } else if (p->context) {
        sophia_diag_add(ld->diag, ld->name, line, col,
                        "YAML syntax error: %s (%s started at line %d "
                        "column %d)", problem, p->context,
                        (int)p->context_mark.line + 1,
                        (int)p->context_mark.column + 1);
    } else {
        sophia_diag_add(ld->diag, ld->name, line, col,
                        "YAML syntax error: %s", problem);
    }
}

static int next_event(loader *ld, yaml_event_t *ev)
{
    if (ld->broken)
        return 0;
    if (!yaml_parser_parse(&ld->parser, ev)) {
        report_syntax(ld);
        return 0;
    }
    return 1;
}

/* ---- pass 1: events -> tree -------------------------------------------- */

static node *parse_node(loader *ld, yaml_event_t *ev, int depth);

static node *node_at(node_kind kind, const yaml_mark_t *m)
{
    node *n = conf_xrealloc(NULL, sizeof(*n));
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    return n;
}

static void refuse_anchor(loader *ld, const yaml_char_t *anchor,
                          const yaml_mark_t *m)
{
    if (anchor)
        sophia_diag_add(ld->diag, ld->name, (int)m->line + 1,
                        (int)m->column + 1,
                        "anchor '&%s' refused: aliases are not allowed in "
                        "sophia configuration", (const char *)anchor);
}

static node *scalar_node(loader *ld, yaml_event_t *ev)
{
    node *n = node_at(NODE_SCALAR, &ev->start_mark);
    refuse_anchor(ld, ev->data.scalar.anchor, &ev->start_mark);
    n->len = ev->data.scalar.length;
    n->text = conf_xstrndup((const char *)ev->data.scalar.value, n->len);
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (memchr(n->text, '\0', n->len)) {
        ERR(ld, n, "NUL characters are not allowed in values");
        n->reported = 1;
    }
    return n;
}

/* Too deep: stop reading altogether, like a syntax error. Skipping to the
 * end of the deep part instead would cost libyaml time quadratic in the
 * depth of flow collections ("[[[[..."), a cheap way to stall --check. */
static node *too_deep(loader *ld, yaml_event_t *ev)
{
    node *n = node_at(NODE_SCALAR, &ev->start_mark);
    n->text = conf_xstrdup("");
    n->plain = 1;
    n->reported = 1;
    ERR(ld, n, "nesting is deeper than %d levels; stopped reading",
        SOPHIA_CONF_MAX_DEPTH);
    ld->broken = 1;
    return n;
}

static int key_cmp(const void *a, const void *b)
{
    const node *x = *(node *const *)a, *y = *(node *const *)b;
    size_t l = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->text, y->text, l);
    if (r == 0 && x->len != y->len)
        r = x->len < y->len ? -1 : 1;
    if (r == 0) /* keep document order among equal keys */
        r = (x->line != y->line) ? (x->line < y->line ? -1 : 1)
                                 : (x->col < y->col ? -1 : x->col > y->col);
    return r;
}

/* Marks repeated scalar keys; sorting keeps huge mappings O(n log n). */
static void mark_duplicates(node *map)
{
    size_t n = 0;
    node **keys = conf_xrealloc(NULL, (map->nkids / 2 + 1) * sizeof(*keys));
    for (size_t i = 0; i + 1 < map->nkids; i += 2)
        if (map->kids[i]->kind == NODE_SCALAR)
            keys[n++] = map->kids[i];
    qsort(keys, n, sizeof(*keys), key_cmp);
    for (size_t i = 1; i < n; i++) {
        const node *a = keys[i - 1], *b = keys[i];
        if (a->len == b->len && !memcmp(a->text, b->text, a->len))
            keys[i]->dup_of = a->dup_of ? a->dup_of : a;
    }
    free(keys);
}

static node *collection_node(loader *ld, yaml_event_t *ev, int depth)
{
    int is_map = ev->type == YAML_MAPPING_START_EVENT;
    yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT
                                   : YAML_SEQUENCE_END_EVENT;
    refuse_anchor(ld, is_map ? ev->data.mapping_start.anchor
                             : ev->data.sequence_start.anchor,
                  &ev->start_mark);
    if (depth > SOPHIA_CONF_MAX_DEPTH)
        return too_deep(ld, ev);

    node *n = node_at(is_map ? NODE_MAP : NODE_SEQ, &ev->start_mark);
    yaml_event_t e;
    while (next_event(ld, &e)) {
        if (e.type == end) {
            yaml_event_delete(&e);
            break;
        }
        node *kid = parse_node(ld, &e, depth + 1);
        yaml_event_delete(&e);
        node **slot = GROW(n->kids, n->nkids);
        *slot = kid;
    }
    if (is_map && !ld->broken)
        mark_duplicates(n);
    return n;
}

static node *parse_node(loader *ld, yaml_event_t *ev, int depth)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return scalar_node(ld, ev);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        return collection_node(ld, ev, depth);
    case YAML_ALIAS_EVENT: {
        node *n = node_at(NODE_SCALAR, &ev->start_mark);
        n->text = conf_xstrdup("");
        n->plain = 1;
        n->reported = 1;
        ERR(ld, n, "alias '*%s' refused: aliases are not allowed in sophia "
                   "configuration", (const char *)ev->data.alias.anchor);
        return n;
    }
    default: { /* unreachable with a conforming parser */
        node *n = node_at(NODE_SCALAR, &ev->start_mark);
        n->text = conf_xstrdup("");
        n->plain = 1;
        return n;
    }
    }
}

/* Reads the whole stream; returns the root of its one document or NULL. */
node *conf_parse_document(loader *ld)
{
    node *root = NULL;
    int docs = 0;
    yaml_event_t ev;
    while (next_event(ld, &ev)) {
        yaml_event_type_t t = ev.type;
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            sophia_diag_add(ld->diag, ld->name, (int)ev.start_mark.line + 1,
                            (int)ev.start_mark.column + 1,
                            "only one YAML document is allowed");
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_ALIAS_EVENT ||
            t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT)
            root = parse_node(ld, &ev, 1);
        yaml_event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT)
            break;
    }
    return root;
}
