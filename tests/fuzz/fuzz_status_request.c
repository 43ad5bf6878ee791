/* tests/fuzz/fuzz_status_request.c — an HTTP request to the status endpoint.
 *
 * Input: a request line "METHOD PATH[?QUERY]" (anything after the first line
 * is ignored). Method and path go to the route parser as libmicrohttpd hands
 * them over; each "key[=value]" of the query goes to the /queue filter
 * parser, as the server does for GET /queue. A match must name a valid queue
 * ID or destination; a refusal must say why. The filter
 * stays valid while every argument was accepted.
 */
#include "fuzz.h"
#include "status/request.h"

#include <errno.h>
#include <string.h>

static void check_request(int r, const struct status_request *req, const char *allow,
                          const char *why)
{
        FUZZ_ASSERT(r == 0 || r == -ENOENT || r == -EOPNOTSUPP || r == -EINVAL);
        if (r < 0)
                FUZZ_ASSERT(why && *why);
        if (r == -EOPNOTSUPP)
                FUZZ_ASSERT(allow && *allow);
        if (r != 0)
                return;
        FUZZ_ASSERT(memchr(req->target, '\0', sizeof(req->target)) != NULL);
        if (req->route == ROUTE_MESSAGE)
                FUZZ_ASSERT(status_id_valid(req->target));
        if (req->route == ROUTE_ACTION && req->target[0])
                FUZZ_ASSERT(status_id_valid(req->target) || status_destination_valid(req->target));
}

static void parse_query(char *query)
{
        struct status_queue_filter f;
        status_queue_filter_init(&f);
        unsigned seen = 0;
        for (char *arg = query, *next; arg; arg = next) {
                next = strchr(arg, '&');
                if (next)
                        *next++ = '\0';
                char *eq = strchr(arg, '=');
                if (eq)
                        *eq++ = '\0';
                const char *why = NULL;
                int r = status_parse_queue_arg(&f, &seen, arg, eq, &why);
                FUZZ_ASSERT(r == 0 || (r == -EINVAL && why && *why));
                if (r < 0)
                        return; /* the server answers 400 at the first bad argument */
                FUZZ_ASSERT(f.limit >= 1 && f.limit <= STATUS_MAX_LIMIT);
                FUZZ_ASSERT(f.state < STATUS_QSTATE__MAX);
                FUZZ_ASSERT(!f.destination || status_destination_valid(f.destination));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *line = fuzz_strndup(data, size);
        line[strcspn(line, "\r\n")] = '\0';
        char *path = strchr(line, ' ');
        if (path)
                *path++ = '\0';
        char *query = path ? strchr(path, '?') : NULL;
        if (query)
                *query++ = '\0';
        struct status_request req;
        const char *allow = NULL, *why = NULL;
        int r = status_parse_request(line, path ? path : "", &req, &allow, &why);
        check_request(r, &req, allow, why);
        if (query)
                parse_query(query);
        free(line);
        return 0;
}
