/*
 * version - see version.h. One line per component: "NAME VERSION", the
 * first line "sophiad VERSION (SDK MAJOR.MINOR)" as before.
 */
#include "daemon/version.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <sophia/sdk.h>
#include <string.h>
#include <yaml.h>

#include "memory/faiss_shim.h"

/* PQlibVersion() is major*10000 + minor for PostgreSQL >= 10. */
static void print_libpq(FILE *out)
{
    int v = PQlibVersion();
    fprintf(out, "libpq %d.%d\n", v / 10000, v % 10000);
}

void sophia_version_print(FILE *out)
{
    fprintf(out, "sophiad %s (SDK %d.%d)\n", SOPHIA_VERSION,
            SOPHIA_SDK_VERSION_MAJOR, SOPHIA_SDK_VERSION_MINOR);
    fprintf(out, "plugin SDK ABI %d.%d\n", SOPHIA_SDK_VERSION_MAJOR,
            SOPHIA_SDK_VERSION_MINOR);
    fprintf(out, "libevent %s\n", event_get_version());
    /* Debian's lws says "4.1.6-" (an empty git hash after the dash). */
    const char *lws = lws_get_library_version();
    size_t n = strlen(lws);
    fprintf(out, "libwebsockets %.*s\n",
            (int)(n && lws[n - 1] == '-' ? n - 1 : n), lws);
    /* hiredis 0.14 has no run-time version call. */
    fprintf(out, "hiredis %d.%d.%d (build)\n", HIREDIS_MAJOR, HIREDIS_MINOR,
            HIREDIS_PATCH);
    print_libpq(out);
    fprintf(out, "jansson %s\n", jansson_version_str());
    fprintf(out, "libyaml %s\n", yaml_get_version_string());
#ifdef OPENSSL_VERSION_STRING /* 3.0: "3.0.11" rather than "OpenSSL 3.0.11 19 Sep 2023" */
    fprintf(out, "openssl %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
#else
    fprintf(out, "openssl %s\n", OpenSSL_version(OPENSSL_VERSION));
#endif
    /* libsystemd has no version call; the build's pkg-config version. */
    fprintf(out, "libsystemd %s (build)\n", SOPHIA_LIBSYSTEMD_VERSION);
    /* faiss is linked statically (libfaiss.a): build and run are one. */
    fprintf(out, "faiss %s (build)\n", sophia_faiss_version());
}
