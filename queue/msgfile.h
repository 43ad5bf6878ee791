/* queue/msgfile.h — the trailer of a message file (private to queue/).
 *
 * A submission in incoming/ is one file laid out body first:
 *     [body][envelope JSON][trailer]
 * and the trailer (MSGFILE_TRAILER_LEN bytes, ASCII) is
 *     "TARRYMSG1 " ID " " BODY_LEN(20 digits) " " ENV_LEN(10 digits) " " SUM(16 hex) "\n"
 * SUM is FNV-1a 64 over the envelope bytes and the trailer before it, so a
 * torn or stray trailer is refused, and one copied inside a message body
 * does not match (the ID it names is given only at commit).
 * Pickup renames the whole file to active/ID/body: its first BODY_LEN bytes
 * are the body, and the rest is cut off once an envelope file is durable.
 */
#pragma once

#include "queue/queue.h"

#include <stddef.h>
#include <stdint.h>

#define MSGFILE_MAGIC       "TARRYMSG1 "
#define MSGFILE_TRAILER_LEN (10 + QUEUE_ID_LEN + 1 + 20 + 1 + 10 + 1 + 16 + 1)

/* The trailer for a file whose body has body_len bytes followed by env. */
void msgfile_trailer(char out[MSGFILE_TRAILER_LEN + 1], const char *id, uint64_t body_len,
                     const char *env, size_t env_len);

/* Read the trailer of fd (a regular file of file_size bytes) for message id.
 * 0: *body_len set and, when env is not NULL, *env (malloc'd, NUL-terminated)
 * and *env_len. -ENODATA: the file does not end in a trailer of id (an
 * ordinary body). -EBADMSG with *why: it does, but it is torn or its lengths
 * do not add up. Other negative errno: a read failed. */
int msgfile_read_trailer(int fd, uint64_t file_size, const char *id, uint64_t *body_len, char **env,
                         size_t *env_len, const char **why);
