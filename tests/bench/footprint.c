/*
 * footprint - the distinct memory one POST touches, counted from
 * `valgrind --tool=lackey --trace-mem=yes` output (instr.sh --footprint).
 *
 * Why: at 100 POSTs a second the loop sleeps ~10 ms between POSTs, and
 * CPU per event at 5,000 events/s is about twice what it is at 50,000,
 * for sophiad and the floor alike; part of that is the core waking from
 * idle, part what each POST fetches again. This counts the second: the
 * distinct 64-byte lines and 4 KiB pages of code and of data between one
 * entry of the marker instruction (the first of the POST's route
 * handler) and the next. Like callgrind's instruction count, it does not
 * depend on the machine's load. It is a count, not a prediction: a 7-11%
 * smaller footprint (README, round eight) left CPU per event where it
 * was.
 *
 * Reads the trace on stdin; prints one line per window:
 *   window N instr I code_lines C data_lines D code_pages P data_pages Q
 * Usage: valgrind --tool=lackey --trace-mem=yes --log-fd=9 sophiad ... \
 *          9> >(footprint_count MARKER_HEX)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SET_BITS 22 /* 4M slots: far more than one POST touches */

typedef struct counts {
    long instr, code_lines, data_lines, code_pages, data_pages;
} counts;

/* An open-addressed set of tagged keys (the tag keeps the four kinds of
 * key apart), emptied at each window. */
typedef struct set {
    uint64_t *slot;
} set;

static int set_add(set *s, uint64_t key)
{
    key |= 1ull << 63; /* never 0, the empty slot */
    size_t mask = ((size_t)1 << SET_BITS) - 1;
    size_t h = (size_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - SET_BITS));
    for (; s->slot[h]; h = (h + 1) & mask)
        if (s->slot[h] == key)
            return 0;
    s->slot[h] = key;
    return 1;
}

enum { CODE_LINE = 1, DATA_LINE, CODE_PAGE, DATA_PAGE };

static uint64_t tagged(int kind, uint64_t v)
{
    return (uint64_t)kind << 58 | v;
}

static void touch(set *s, counts *c, int code, uint64_t addr)
{
    if (set_add(s, tagged(code ? CODE_LINE : DATA_LINE, addr >> 6)))
        ++*(code ? &c->code_lines : &c->data_lines);
    if (set_add(s, tagged(code ? CODE_PAGE : DATA_PAGE, addr >> 12)))
        ++*(code ? &c->code_pages : &c->data_pages);
}

static void print(long window, const counts *c)
{
    printf("window %ld instr %ld code_lines %ld data_lines %ld "
           "code_pages %ld data_pages %ld\n", window, c->instr,
           c->code_lines, c->data_lines, c->code_pages, c->data_pages);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: footprint_count MARKER_HEX < lackey-trace\n");
        return 2;
    }
    uint64_t marker = strtoull(argv[1], NULL, 16);
    set s = {calloc((size_t)1 << SET_BITS, sizeof(uint64_t))};
    if (!s.slot) {
        perror("footprint_count");
        return 1;
    }
    counts c = {0};
    long window = -1; /* before the first POST: start-up, not counted */
    char line[256];
    /* "I  04a1b2c0,3" an instruction; " L ...", " S ...", " M ..." data */
    while (fgets(line, sizeof(line), stdin)) {
        int code = line[0] == 'I';
        if (!code && !(line[0] == ' ' && strchr("LSM", line[1])))
            continue; /* valgrind's own messages */
        uint64_t addr = strtoull(line + 3, NULL, 16);
        if (code && addr == marker) {
            if (window >= 0)
                print(window, &c);
            memset(s.slot, 0, sizeof(uint64_t) << SET_BITS);
            c = (counts){0};
            window++;
        }
        if (window < 0)
            continue;
        c.instr += code;
        touch(&s, &c, code, addr);
    }
    free(s.slot);
    return 0;
}
