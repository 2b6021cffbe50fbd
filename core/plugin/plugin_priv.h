/*
 * plugin_priv - what the files of the plugin module share (plugin.c:
 * loading and unloading one instance; plugin_opts.c: its typed options;
 * plugin_set.c: the instance set and reload). Not for other modules: they
 * use plugin.h.
 */
#ifndef SOPHIA_PLUGIN_PRIV_H
#define SOPHIA_PLUGIN_PRIV_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "plugin/plugin.h"

/* What every check needs to say where and about what it complains. */
typedef struct load_ctx {
    const sophia_conf *c;
    const sophia_conf_instance *ci;
    sophia_diag *diag;
    sophia_instance *inst;
    const sophia_plugin_set *old; /* the running set during a reload */
} load_ctx;

/* Adds `FILE:LINE:COL: message` to the load's diag. This and buf_add serve
 * plugin.c and plugin_opts.c alike, and are small enough to live here. */
static inline void diag_at(const load_ctx *L, int line, int col,
                           const char *fmt, ...) SOPHIA_PRINTF(4, 5);

static inline void diag_at(const load_ctx *L, int line, int col,
                           const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sophia_diag_add(L->diag, L->c ? L->c->file : NULL, line, col, "%s", msg);
}

/* Appends to a fixed buffer, truncating quietly: messages are for humans. */
static inline void buf_add(char *buf, size_t cap, const char *fmt, ...)
    SOPHIA_PRINTF(3, 4);

static inline void buf_add(char *buf, size_t cap, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, cap - used, fmt, ap);
    va_end(ap);
}

/* plugin.c: loading one instance */

/* Records what `file` is now, so a reload can tell a rebuilt module. */
void plugin_file_identity(sophia_instance *inst);
int plugin_same_identity(const sophia_instance *a, const sophia_instance *b);
/* sophia_plugin_load next to the running set `old` (NULL at start). */
sophia_instance *plugin_load_one(const sophia_conf *c,
                                 const sophia_conf_instance *ci,
                                 const sophia_host *host,
                                 const sophia_plugin_set *old,
                                 sophia_diag *diag);

/* plugin_opts.c: options */

/* Number of entries of the plugin's option table, or -1 when it is
 * malformed (reported). */
int plugin_check_option_table(load_ctx *L);
void plugin_opts_free(sophia_opts *o);
/* The typed options of the instance, or NULL (each problem reported). */
sophia_opts *plugin_build_opts(load_ctx *L);

#endif
