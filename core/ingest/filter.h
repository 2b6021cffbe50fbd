/*
 * filter - a stream's YAML filter, compiled once and evaluated on each
 * event before its processor sees it.
 *
 * A filter is a list of predicates on dotted JSON paths ("event.channel",
 * "rows.0.ID"), all of which must hold (AND); a stream that needs OR
 * writes `in: [...]` or a regex alternation. Operators:
 *   equals / not_equals  the value's scalar form equals the operand
 *                        (strings as text, numbers numerically, booleans
 *                        and null by name); a missing path is not equal
 *   in / not_in          equals one of / none of the operands
 *   exists               true: the path holds a non-null value; false: not
 *   gt gte lt lte        numeric compare; numeric strings ("250000") count
 *   matches              POSIX extended regex on the value's text form
 *                        (`icase: true` for case-insensitive)
 * Regexes are compiled here with regcomp (config_streams.c already checked them
 * for the FILE:LINE:COL report), so evaluation never parses anything.
 */
#ifndef SOPHIA_FILTER_H
#define SOPHIA_FILTER_H

#include <jansson.h>
#include <stddef.h>

#include "conf/config.h"

typedef struct sophia_filter sophia_filter;

/* Compiles `n` predicates; NULL when n is 0 (no filter) or on failure,
 * with *err set to a message in the latter case. */
sophia_filter *sophia_filter_new(const sophia_conf_pred *preds, size_t n,
                                 const char **err);
void sophia_filter_free(sophia_filter *f);

/* 1 when `ev` passes every predicate (a NULL filter passes everything). */
int sophia_filter_match(const sophia_filter *f, const json_t *ev);

/* The scalar text of v ("abc", "12.5", "true", "null"); 0, or -1 for
 * objects and arrays. */
int sophia_json_scalar_text(const json_t *v, char *buf, size_t len);

#endif
