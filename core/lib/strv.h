/*
 * strv - NULL-terminated string vectors (tags), copied and freed in one
 * place: a cache put and a plugin's queued action both keep their own
 * copy of the caller's tags, which may not outlive the call.
 *
 * A copy is one block: the pointers, the NULL, then the strings. A
 * caller that keeps other bytes with the tags (a key, a value) packs the
 * vector into its own block instead, so a put costs one allocation, not
 * one per string.
 */
#ifndef SOPHIA_STRV_H
#define SOPHIA_STRV_H

#include <stddef.h>

/* A deep copy of `v` (NULL: an empty vector) in one allocation; NULL on
 * out of memory. */
char **sophia_strv_dup(const char *const *v);
/* Frees a vector sophia_strv_dup made (NULL is fine). */
void sophia_strv_free(char **v);

/* Bytes sophia_strv_pack writes for `v` (NULL: an empty vector). */
size_t sophia_strv_packed_size(const char *const *v);
/* Copies `v` into `mem` (sophia_strv_packed_size(v) bytes, aligned for a
 * pointer): the vector, whose strings follow its pointers. */
char **sophia_strv_pack(void *mem, const char *const *v);

#endif
