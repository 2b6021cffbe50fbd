/*
 * hash - see hash.h.
 *
 * SipHash-1-3 after the reference implementation (Aumasson & Bernstein):
 * one compression round per 8-byte word, three finalization rounds. The
 * stable hash is 64-bit FNV-1a with murmur3's finalizer.
 */
#include "lib/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"

static sophia_hash_key process_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* /dev/urandom, for kernels older than getrandom (3.17). */
static int read_urandom(void *buf, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    return got == n ? 0 : -1;
}

static void key_init(void)
{
    sophia_hash_key k;
    ssize_t r;
    do
        r = getrandom(&k, sizeof(k), 0); /* blocks only before the pool is seeded */
    while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof(k)) {
        process_key = k;
        return;
    }
    if (r < 0 && errno == ENOSYS && read_urandom(&k, sizeof(k)) == 0) {
        process_key = k;
        return;
    }
    /* No randomness at all: keep running (tables still work) but say that
     * their order can be predicted. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    process_key.k0 = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    process_key.k1 = (uint64_t)ts.tv_sec * 0x9e3779b97f4a7c15ull;
    sophia_error("hash", "msg=\"no random seed (getrandom and /dev/urandom "
                         "failed): hash tables are predictable\" err=\"%s\"",
                 strerror(errno));
}

const sophia_hash_key *sophia_hash_process_key(void)
{
    pthread_once(&key_once, key_init);
    return &process_key;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                              \
    do {                                                                      \
        v0 += v1;                                                             \
        v1 = ROTL(v1, 13);                                                    \
        v1 ^= v0;                                                             \
        v0 = ROTL(v0, 32);                                                    \
        v2 += v3;                                                             \
        v3 = ROTL(v3, 16);                                                    \
        v3 ^= v2;                                                             \
        v0 += v3;                                                             \
        v3 = ROTL(v3, 21);                                                    \
        v3 ^= v0;                                                             \
        v2 += v1;                                                             \
        v1 = ROTL(v1, 17);                                                    \
        v1 ^= v2;                                                             \
        v2 = ROTL(v2, 32);                                                    \
    } while (0)

static inline uint64_t load32(const unsigned char *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* The last `left` (< 8) bytes at p as a little-endian word, as the
 * reference's byte-wise copy makes it, in at most two loads: a copy of
 * variable length was a loop of a third of a short key's hash. When the
 * input has 8 bytes or more, the word ending at its end is read and
 * shifted (its first bytes are the previous word's); else two 4-byte
 * loads that may overlap (the same bytes OR'd twice), or the first,
 * middle and last bytes of 1 to 3. */
static inline uint64_t tail_word(const unsigned char *p, size_t left,
                                 size_t len)
{
    if (!left)
        return 0;
    if (len >= 8) {
        uint64_t w;
        memcpy(&w, p + left - 8, 8);
        return w >> (8 * (8 - left));
    }
    if (left >= 4)
        return load32(p) | load32(p + left - 4) << (8 * (left - 4));
    return (uint64_t)p[0] | (uint64_t)p[left / 2] << (8 * (left / 2)) |
           (uint64_t)p[left - 1] << (8 * (left - 1));
}

/* Little-endian words, as the reference; memcpy keeps unaligned reads
 * defined (x86 only runs Linux here, so no byte swap). */
uint64_t sophia_hash_keyed(const sophia_hash_key *key, const void *data,
                           size_t len)
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ull ^ key->k0;
    uint64_t v1 = 0x646f72616e646f6dull ^ key->k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ key->k0;
    uint64_t v3 = 0x7465646279746573ull ^ key->k1;
    uint64_t b = (uint64_t)len << 56;
    size_t left = len;
    while (left >= 8) {
        uint64_t m;
        memcpy(&m, p, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
        p += 8;
        left -= 8;
    }
    b |= tail_word(p, left, len);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t sophia_hash(const void *data, size_t len)
{
    return sophia_hash_keyed(sophia_hash_process_key(), data, len);
}

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

uint64_t sophia_hash_stable(uint64_t seed, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = FNV_OFFSET ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}
