/*
 * sophia-zdict - trains a zstd dictionary for cache.compress.dictionary
 * from a sample of the values L3 holds.
 *
 *   sophia-zdict [-n SAMPLES] [-s BYTES] [-d OLD.zdict] OUT.zdict
 *
 * Reads up to SAMPLES (2000) live values from the sophia_cache table of
 * SOPHIA_PG_URL (a random sample, so no one key prefix dominates), each
 * turned back into plain JSON first (a compressed row needs the
 * dictionary it was written with: -d), and writes a dictionary of at most
 * BYTES (112640, zstd's own default) to OUT.
 *
 * Why a separate tool and not training at start-up: every node sharing
 * the tiers must hold the same dictionary (a frame names the one it was
 * written with, and cannot be read without it), so the dictionary is a
 * file an operator makes once, deploys everywhere, then points
 * cache.compress.dictionary at. A node trained on its own would write
 * frames the others could not read. Changing it later is safe for the
 * same reason it needs care: old frames keep their old dictionary's id,
 * and a node without that one reads them as a tier error (the next tier
 * or the loader answers) until they are rewritten or expire.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "cache/cache_zstd.h"

static int usage(void)
{
    fprintf(stderr, "usage: sophia-zdict [-n SAMPLES] [-s BYTES] "
                    "[-d OLD.zdict] OUT.zdict (reads SOPHIA_PG_URL)\n");
    return 2;
}

/* The sample, plain, into samples/lens; how many. */
static size_t sample(PGconn *pg, sophia_zstd *z, long n, char **samples,
                     size_t *lens)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT value FROM sophia_cache WHERE octet_length(value) > 0 "
             "AND (expires_at IS NULL OR expires_at > now()) "
             "ORDER BY random() LIMIT %ld", n);
    /* Binary results: the bytea as its bytes, not hex. */
    PGresult *r = PQexecParams(pg, sql, 0, NULL, NULL, NULL, NULL, 1);
    size_t got = 0, unreadable = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "sophia-zdict: %s", PQerrorMessage(pg));
    for (int i = 0; i < PQntuples(r); i++) {
        const char *v;
        size_t len;
        char *owned;
        if (sophia_zstd_unpack(z, PQgetvalue(r, i, 0),
                               (size_t)PQgetlength(r, i, 0), &v, &len,
                               &owned)) {
            unreadable++;
            continue;
        }
        samples[got] = owned ? owned : memcpy(malloc(len), v, len);
        lens[got++] = len;
    }
    if (unreadable)
        fprintf(stderr, "sophia-zdict: %zu compressed values need another "
                        "dictionary (-d): left out\n", unreadable);
    PQclear(r);
    return got;
}

int main(int argc, char **argv)
{
    long n = 2000, cap = 112640;
    const char *old = NULL, *url = getenv("SOPHIA_PG_URL");
    int opt;
    while ((opt = getopt(argc, argv, "n:s:d:")) != -1) {
        if (opt == 'n')
            n = atol(optarg);
        else if (opt == 's')
            cap = atol(optarg);
        else if (opt == 'd')
            old = optarg;
        else
            return usage();
    }
    if (optind + 1 != argc || n < 10 || cap < 1024 || !url || !*url)
        return usage();
    char err[512];
    sophia_zstd *z = sophia_zstd_open(0, 0, old, err, sizeof(err));
    PGconn *pg = PQconnectdb(url);
    if (!z || PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "sophia-zdict: %s\n",
                z ? PQerrorMessage(pg) : err);
        return 1;
    }
    char **samples = calloc((size_t)n, sizeof(*samples));
    size_t *lens = calloc((size_t)n, sizeof(*lens));
    size_t got = sample(pg, z, n, samples, lens), dlen = 0;
    PQfinish(pg);
    void *dict = sophia_zstd_train((const char *const *)samples, lens, got,
                                   (size_t)cap, &dlen, err, sizeof(err));
    FILE *f = dict ? fopen(argv[optind], "wb") : NULL;
    int ok = f && fwrite(dict, 1, dlen, f) == dlen;
    if (f && fclose(f))
        ok = 0;
    if (ok)
        printf("%s: %zu bytes from %zu values\n", argv[optind], dlen, got);
    else
        fprintf(stderr, "sophia-zdict: %s\n", dict ? argv[optind] : err);
    for (size_t i = 0; i < got; i++)
        free(samples[i]);
    free(samples);
    free(lens);
    free(dict);
    sophia_zstd_free(z);
    return ok ? 0 : 1;
}
