/*
 * test_redis_reply - hiredis reply trees built in one arena per reply
 * (event/redis_reply.c) are the trees hiredis' own functions build, member
 * for member: every reply type, nesting, empty and nil arrays, texts with
 * NUL bytes, a reply large enough to take several chunks, and replies fed
 * one byte at a time (so a tree is built across many reads); a reply
 * freed through the table frees its parts (run under ASan by
 * `scripts/test --sanitize`), and a part passed to it is left alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "event/redis_reply.h"

static void same_tree(const redisReply *a, const redisReply *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->integer, b->integer);
    assert_int_equal(a->len, b->len);
    assert_int_equal(a->str == NULL, b->str == NULL);
    if (a->str) {
        assert_memory_equal(a->str, b->str, a->len);
        assert_int_equal(b->str[b->len], '\0');
    }
    assert_int_equal(a->elements, b->elements);
    for (size_t i = 0; i < a->elements; i++)
        same_tree(a->element[i], b->element[i]);
}

/* The replies in `resp` read with hiredis' functions and with ours, fed
 * `step` bytes at a time (0: whole); returns how many were compared. */
static int compare(const char *resp, size_t len, size_t step)
{
    redisReader *stock = redisReaderCreate();
    redisReader *ours = redisReaderCreate();
    ours->fn = sophia_redis_reply_fns();
    assert_int_equal(redisReaderFeed(stock, resp, len), REDIS_OK);
    int n = 0;
    size_t fed = 0;
    for (;;) {
        void *a = NULL, *b = NULL;
        assert_int_equal(redisReaderGetReply(stock, &a), REDIS_OK);
        while (!b && fed < len) {
            size_t k = step && len - fed > step ? step : len - fed;
            assert_int_equal(redisReaderFeed(ours, resp + fed, k), REDIS_OK);
            fed += k;
            assert_int_equal(redisReaderGetReply(ours, &b), REDIS_OK);
        }
        if (!b)
            assert_int_equal(redisReaderGetReply(ours, &b), REDIS_OK);
        assert_int_equal(a == NULL, b == NULL);
        if (!a)
            break;
        same_tree(a, b);
        freeReplyObject(a);
        ours->fn->freeObject(b);
        n++;
    }
    redisReaderFree(stock);
    redisReaderFree(ours);
    return n;
}

static const char SMALL[] =
    "+OK\r\n"
    "-ERR no such key\r\n"
    ":42\r\n"
    ":-7\r\n"
    "$5\r\nhello\r\n"
    "$0\r\n\r\n"
    "$-1\r\n"
    "*0\r\n"
    "*-1\r\n"
    "$3\r\na\0b\r\n"
    /* an XREADGROUP answer: [[key, [[id, [field, value]], [id, nil]]]] */
    "*1\r\n*2\r\n$3\r\nkey\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$4\r\ndata\r\n"
    "$7\r\n{\"n\":1}\r\n*2\r\n$3\r\n2-0\r\n*-1\r\n"
    "*3\r\n:1\r\n*2\r\n+a\r\n-b\r\n$-1\r\n";

static void every_type_whole_and_byte_by_byte(void **state)
{
    (void)state;
    assert_int_equal(compare(SMALL, sizeof(SMALL) - 1, 0), 12);
    assert_int_equal(compare(SMALL, sizeof(SMALL) - 1, 1), 12);
    assert_int_equal(compare(SMALL, sizeof(SMALL) - 1, 7), 12);
}

/* 3,000 entries of a 100-byte value, and a 200 KB string: many chunks,
 * and a root text larger than any chunk. */
static void large_replies(void **state)
{
    (void)state;
    size_t cap = 1 << 20, len = 0;
    char *resp = malloc(cap);
    assert_non_null(resp);
    char val[101];
    memset(val, 'v', 100);
    val[100] = '\0';
    len += (size_t)sprintf(resp + len, "*3000\r\n");
    for (int i = 0; i < 3000; i++)
        len += (size_t)sprintf(resp + len,
                               "*2\r\n$%d\r\n%d-0\r\n*2\r\n$4\r\n"
                               "data\r\n$100\r\n%s\r\n",
                               (int)snprintf(NULL, 0, "%d-0", i), i, val);
    len += (size_t)sprintf(resp + len, "$200000\r\n");
    memset(resp + len, 'x', 200000);
    len += 200000;
    len += (size_t)sprintf(resp + len, "\r\n");
    assert_int_equal(compare(resp, len, 0), 2);
    assert_int_equal(compare(resp, len, 4096), 2);
    free(resp);
}

static void a_part_is_not_freed_alone(void **state)
{
    (void)state;
    redisReader *r = redisReaderCreate();
    r->fn = sophia_redis_reply_fns();
    const char resp[] = "*2\r\n$1\r\na\r\n:5\r\n";
    assert_int_equal(redisReaderFeed(r, resp, sizeof(resp) - 1), REDIS_OK);
    redisReply *rep = NULL;
    assert_int_equal(redisReaderGetReply(r, (void **)&rep), REDIS_OK);
    assert_non_null(rep);
    r->fn->freeObject(rep->element[0]); /* a part: nothing happens */
    r->fn->freeObject(NULL);
    assert_string_equal(rep->element[0]->str, "a");
    assert_int_equal(rep->element[1]->integer, 5);
    r->fn->freeObject(rep);
    redisReaderFree(r);
}

/* A reader freed half-way through a reply frees what it built. */
static void a_reader_freed_mid_reply(void **state)
{
    (void)state;
    redisReader *r = redisReaderCreate();
    r->fn = sophia_redis_reply_fns();
    const char resp[] = "*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n";
    assert_int_equal(redisReaderFeed(r, resp, sizeof(resp) - 1), REDIS_OK);
    void *rep = NULL;
    assert_int_equal(redisReaderGetReply(r, &rep), REDIS_OK);
    assert_null(rep);
    redisReaderFree(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_type_whole_and_byte_by_byte),
        cmocka_unit_test(large_replies),
        cmocka_unit_test(a_part_is_not_freed_alone),
        cmocka_unit_test(a_reader_freed_mid_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
