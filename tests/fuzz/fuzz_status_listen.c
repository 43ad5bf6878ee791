/* tests/fuzz/fuzz_status_listen.c — a status_listen entry from tarry.conf.
 *
 * Input: one entry ("unix:/run/tarry/status.sock", "127.0.0.1:8025",
 * "[::1]:8025", "localhost:0"). Accepted entries fit their fixed fields and
 * name a numeric address; the loopback check then works on it.
 */
#include "fuzz.h"
#include "status/request.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = fuzz_strndup(data, size);
        struct status_listen_addr a;
        const char *why = NULL;
        int r = status_parse_listen(s, &a, &why);
        FUZZ_ASSERT(r == 0 || (r == -EINVAL && why && *why));
        if (r == 0 && a.is_unix) {
                FUZZ_ASSERT(memchr(a.path, '\0', sizeof(a.path)) != NULL);
                FUZZ_ASSERT(a.path[0] != '\0');
        } else if (r == 0) {
                FUZZ_ASSERT(memchr(a.host, '\0', sizeof(a.host)) != NULL);
                unsigned char buf[16];
                FUZZ_ASSERT(inet_pton(AF_INET, a.host, buf) == 1 ||
                            inet_pton(AF_INET6, a.host, buf) == 1);
                (void)status_addr_is_loopback(a.host);
        }
        (void)status_addr_is_loopback(s);
        (void)status_id_valid(s);
        (void)status_destination_valid(s);
        free(s);
        return 0;
}
