/*
 * regex_size - how large a POSIX extended regular expression grows when
 * compiled, before regcomp is asked to.
 *
 * glibc's regcomp expands repetitions by copying the repeated tree: "a+"
 * is compiled as "aa*" and "x{1000}" as a thousand copies, so a
 * repetition of a repetition multiplies ("a++++", "(a{100}){100}"). A
 * config pattern of 100 bytes made it allocate over 2 GB (fuzz_config).
 * This walks the pattern and estimates the compiled tree's nodes, each
 * repetition multiplying what it repeats, as regcomp does; callers refuse
 * a pattern past their limit with an error instead of compiling it.
 */
#ifndef SOPHIA_REGEX_SIZE_H
#define SOPHIA_REGEX_SIZE_H

#include <stddef.h>

/* Patterns in the config (stream filters) may expand to this many. */
#define SOPHIA_REGEX_MAX_NODES 20000

/* The estimated node count of `pattern` compiled, or limit + 1 as soon
 * as it passes `limit`. */
size_t sophia_regex_size(const char *pattern, size_t limit);

#endif
