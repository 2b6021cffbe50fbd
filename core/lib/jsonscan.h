/*
 * jsonscan - the scan JSON strings share: where a string's run of plain
 * bytes ends. Both readers of JSON text on the event path use it: the
 * ingest parser (ingest/ingest.c) and the check of a plugin's text
 * (host/host_text.c), each of which looks at every byte of every string.
 */
#ifndef SOPHIA_JSONSCAN_H
#define SOPHIA_JSONSCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The first byte of s[i..n) that is below 0x20, the quote, the backslash
 * or 0x80 and above (a UTF-8 sequence), or n. Eight bytes a step where
 * the byte order allows: subtracting 0x20 from a byte below it borrows,
 * a byte XOR the quote (or backslash) is zero and subtracting 1 borrows,
 * a high byte has its top bit. A borrow marks only bytes after a real
 * hit, so the lowest mark is the first such byte. */
static inline size_t sophia_json_plain_run(const unsigned char *s, size_t i,
                                           size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ULL, high = ones << 7;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, sizeof(w));
        uint64_t hit = ((w - ones * 0x20) | ((w ^ (ones * '"')) - ones) |
                        ((w ^ (ones * '\\')) - ones) | w) &
                       high;
        if (hit)
            return i + ((size_t)__builtin_ctzll(hit) >> 3);
    }
#endif
    while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
        i++;
    return i;
}

#endif
