/*
 * host_json - the JSON members of the sophia_host table (host.c's
 * host_table names them), and host->free. A sophia_json * is a json_t *:
 * every member is a thin cast over jansson, so plugins need no JSON
 * library and a call costs what the jansson call costs.
 *
 * Not for the core's own use: core code calls jansson directly.
 */
#ifndef SOPHIA_HOST_JSON_H
#define SOPHIA_HOST_JSON_H

#include <sophia/sdk.h>

/* since 1.0 */
sophia_json_type host_json_type(const sophia_json *v);
const sophia_json *host_json_get(const sophia_json *v, const char *path);
const char *host_json_string(const sophia_json *v);
double host_json_number(const sophia_json *v, double def);
int host_json_bool(const sophia_json *v, int def);
size_t host_json_size(const sophia_json *v);
const sophia_json *host_json_at(const sophia_json *v, size_t i);
const char *host_json_key_at(const sophia_json *v, size_t i,
                             const sophia_json **value);
sophia_json *host_json_object(void);
sophia_json *host_json_array(void);
sophia_json *host_json_str(const char *s);
sophia_json *host_json_num(double d);
sophia_json *host_json_int(int64_t i);
sophia_json *host_json_bool_new(int b);
sophia_json *host_json_copy(const sophia_json *v);
int host_json_set(sophia_json *obj, const char *key, sophia_json *value);
int host_json_append(sophia_json *arr, sophia_json *value);
void host_json_free(sophia_json *v);
char *host_json_dump(const sophia_json *v);
sophia_json *host_json_parse(const char *text);
void host_free(void *p);

/* since 1.1: exact keys (ids with dots in them) and iteration */
const sophia_json *host_json_get_key(const sophia_json *obj, const char *key);
int host_json_del(sophia_json *obj, const char *key);
void *host_json_iter(const sophia_json *obj, void *it, const char **key,
                     const sophia_json **value);

/* since 1.4 */
size_t host_json_write(const sophia_json *v, char *buf, size_t cap);

#endif
