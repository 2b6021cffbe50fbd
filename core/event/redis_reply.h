/*
 * redis_reply - hiredis reply objects built in one arena per reply.
 *
 * hiredis' stock functions allocate every object of a reply on its own,
 * and a string's text apart from it: an XREADGROUP answer is five objects
 * and three more buffers per entry read back (the entry, its id, its
 * field array, the field, the value), each freed again one by one once
 * the callback returned - a third of the instructions hiredis spent on a
 * durable stream's read-back. These build the same `redisReply` tree,
 * member for member, out of a few large blocks owned by the root, and
 * free it with them. Callbacks read a reply as before; none may keep a
 * part of one past its callback (none did: hiredis frees the reply then).
 */
#ifndef SOPHIA_REDIS_REPLY_H
#define SOPHIA_REDIS_REPLY_H

#include <hiredis/read.h>

/* For redisReader.fn: the functions above (a table nothing writes). */
redisReplyObjectFunctions *sophia_redis_reply_fns(void);

#endif
