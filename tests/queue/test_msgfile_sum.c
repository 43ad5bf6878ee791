/* tests/queue/test_msgfile_sum.c — a message file's trailer checksum keeps
 * its value: a file an older sendmail committed is still read. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "queue/msgfile.h"

#define ID  "6B16AC12E0F9D6C8"
#define ENV "{\"sender\":\"alice@sender.test\",\"recipients\":[{\"address\":\"bob@example.test\"}]}"
/* as sendmail wrote it before FNV-1a moved to common/fnv.h */
#define OLD_TRAILER "TARRYMSG1 " ID " 00000000000000004096 0000000076 915fd8ef4a444e97\n"

Test(msgfile_sum, the_trailer_is_written_as_before)
{
        char out[MSGFILE_TRAILER_LEN + 1];
        msgfile_trailer(out, ID, 4096, ENV, strlen(ENV));
        cr_assert_str_eq(out, OLD_TRAILER);
}

Test(msgfile_sum, a_message_file_an_older_sendmail_wrote_is_read)
{
        char path[] = "/tmp/msgfile-sum-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        unlink(path);
        char *body = malloc(4096);
        memset(body, 'x', 4096);
        cr_assert_eq(fd_write_all(fd, body, 4096), 0);
        cr_assert_eq(fd_write_all(fd, ENV, strlen(ENV)), 0);
        cr_assert_eq(fd_write_all(fd, OLD_TRAILER, strlen(OLD_TRAILER)), 0);
        uint64_t body_len = 0;
        char *env = NULL;
        size_t env_len = 0;
        const char *why = NULL;
        cr_assert_eq(msgfile_read_trailer(fd, 4096 + strlen(ENV) + strlen(OLD_TRAILER), ID,
                                          &body_len, &env, &env_len, &why),
                     0, "%s", why ? why : "");
        cr_assert_eq(body_len, 4096);
        cr_assert_str_eq(env, ENV);
        free(env);
        free(body);
        close(fd);
}
