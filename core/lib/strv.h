/*
 * strv - NULL-terminated string vectors (tags), copied and freed in one
 * place: a cache put and a plugin's queued action both keep their own
 * copy of the caller's tags, which may not outlive the call.
 */
#ifndef SOPHIA_STRV_H
#define SOPHIA_STRV_H

/* A deep copy of `v` (NULL: an empty vector); NULL on out of memory. */
char **sophia_strv_dup(const char *const *v);
/* Frees a vector sophia_strv_dup made (NULL is fine). */
void sophia_strv_free(char **v);

#endif
