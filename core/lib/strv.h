/*
 * strv - NULL-terminated string vectors (tags), copied in one place: a
 * cache put and a plugin's queued action both keep their own copy of the
 * caller's tags, which may not outlive the call.
 *
 * A copy is packed into the caller's block with what it keeps beside the
 * tags (a key, a value): the pointers, the NULL, then the strings, so a
 * put costs one allocation, not one per string. Freeing the block frees
 * the vector.
 */
#ifndef SOPHIA_STRV_H
#define SOPHIA_STRV_H

#include <stddef.h>

/* Bytes sophia_strv_pack writes for `v` (NULL: an empty vector). */
size_t sophia_strv_packed_size(const char *const *v);
/* Copies `v` into `mem` (sophia_strv_packed_size(v) bytes, aligned for a
 * pointer): the vector, whose strings follow its pointers. */
char **sophia_strv_pack(void *mem, const char *const *v);
/* The same for the n strings of v whose lengths the caller measured
 * (lens[i] = strlen(v[i])): no strlen again. */
size_t sophia_strv_packed_size_n(size_t n, const size_t *lens);
char **sophia_strv_pack_n(void *mem, const char *const *v, size_t n,
                          const size_t *lens);

#endif
