/* tests/status/test_request.c — parsing of request paths, query arguments
 * and status_listen entries. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "status/request.h"
#include "status/status.h"

static int parse(const char *method, const char *path, struct status_request *req)
{
        const char *allow, *why;
        return status_parse_request(method, path, req, &allow, &why);
}

Test(request, every_endpoint_is_routed)
{
        struct status_request r;
        cr_assert_eq(parse("GET", "/status", &r), 0);
        cr_assert_eq(r.route, ROUTE_STATUS);
        cr_assert_eq(parse("HEAD", "/metrics", &r), 0);
        cr_assert_eq(r.route, ROUTE_METRICS);
        cr_assert_eq(parse("GET", "/queue/00000000DEADBEEF", &r), 0);
        cr_assert_eq(r.route, ROUTE_MESSAGE);
        cr_assert_str_eq(r.target, "00000000DEADBEEF");
        cr_assert_eq(parse("DELETE", "/queue/00000000DEADBEEF", &r), 0);
        cr_assert(r.admin);
        cr_assert_eq(r.action, STATUS_ACTION_DELETE);
        cr_assert_eq(parse("POST", "/destinations/gmail.com/resume", &r), 0);
        cr_assert_eq(r.action, STATUS_ACTION_RESUME);
        cr_assert_str_eq(r.target, "gmail.com");
        cr_assert_eq(parse("POST", "/flush", &r), 0);
        cr_assert_eq(r.action, STATUS_ACTION_FLUSH);
        cr_assert_str_eq(r.target, "");
}

Test(request, unknown_paths_are_not_found)
{
        struct status_request r;
        const char *bad[] = {"",         "status",          "/",
                             "/status/", "//status",        "/queue/0000000000000001/x",
                             "/a/b/c/d", "/destinations/x", "/queue//retry"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_assert_eq(parse("GET", bad[i], &r), -ENOENT, "%s", bad[i]);
}

Test(request, wrong_method_names_the_allowed_ones)
{
        struct status_request r;
        const char *allow, *why;
        cr_assert_eq(status_parse_request("POST", "/status", &r, &allow, &why), -EOPNOTSUPP);
        cr_assert_str_eq(allow, "GET, HEAD");
        cr_assert_eq(status_parse_request("PUT", "/queue/0000000000000001", &r, &allow, &why),
                     -EOPNOTSUPP);
        cr_assert_str_eq(allow, "GET, HEAD, DELETE");
        cr_assert_eq(status_parse_request("GET", "/flush", &r, &allow, &why), -EOPNOTSUPP);
        cr_assert_str_eq(allow, "POST");
}

Test(request, bad_queue_ids_and_destinations_are_bad_requests)
{
        struct status_request r;
        cr_assert_eq(parse("GET", "/queue/00000000deadbeef", &r), -EINVAL, "lower case");
        cr_assert_eq(parse("GET", "/queue/0000000DEADBEEF", &r), -EINVAL, "15 digits");
        cr_assert_eq(parse("POST", "/queue/..%2F..%2Fetc/retry", &r), -EINVAL);
        cr_assert_eq(parse("POST", "/destinations/a b/resume", &r), -EINVAL);
        char longname[300];
        memset(longname, 'a', sizeof(longname));
        memcpy(longname, "/destinations/", 14);
        strcpy(longname + 280, "/resume");
        cr_assert_eq(parse("POST", longname, &r), -EINVAL);
}

Test(request, queue_arguments_fill_the_filter)
{
        struct status_queue_filter f;
        unsigned seen = 0;
        const char *why;
        status_queue_filter_init(&f);
        cr_assert_eq(f.limit, STATUS_DEFAULT_LIMIT);
        cr_assert_eq(status_parse_queue_arg(&f, &seen, "class", "greylist", &why), 0);
        cr_assert_eq(status_parse_queue_arg(&f, &seen, "state", "deferred", &why), 0);
        cr_assert_eq(status_parse_queue_arg(&f, &seen, "destination", "example.com", &why), 0);
        cr_assert_eq(status_parse_queue_arg(&f, &seen, "offset", "20", &why), 0);
        cr_assert_eq(status_parse_queue_arg(&f, &seen, "limit", "10", &why), 0);
        cr_assert(f.has_class);
        cr_assert_eq(f.class, CLASS_GREYLIST);
        cr_assert_eq(f.state, STATUS_QSTATE_DEFERRED);
        cr_assert_str_eq(f.destination, "example.com");
        cr_assert_eq(f.offset, 20);
        cr_assert_eq(f.limit, 10);
}

Test(request, bad_queue_arguments_are_refused)
{
        const char *cases[][2] = {
            {"class", "grey"},      {"state", "sleeping"}, {"limit", "0"}, {"limit", "10001"},
            {"limit", "-1"},        {"offset", "1e3"},     {"offset", ""}, {"nope", "1"},
            {"destination", "a/b"}, {"class", NULL},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct status_queue_filter f;
                unsigned seen = 0;
                const char *why = NULL;
                status_queue_filter_init(&f);
                cr_assert_eq(status_parse_queue_arg(&f, &seen, cases[i][0], cases[i][1], &why),
                             -EINVAL, "%s=%s", cases[i][0], cases[i][1]);
                cr_assert_not_null(why);
        }
        struct status_queue_filter f;
        unsigned seen = 0;
        const char *why;
        status_queue_filter_init(&f);
        cr_assert_eq(status_parse_queue_arg(&f, &seen, "class", "greylist", &why), 0);
        cr_assert_eq(status_parse_queue_arg(&f, &seen, "class", "policy", &why), -EINVAL,
                     "repeated");
}

Test(request, listen_entries_parse_and_loopback_is_recognised)
{
        struct status_listen_addr a;
        const char *why;
        cr_assert_eq(status_parse_listen("unix:/run/tarry/status.sock", &a, &why), 0);
        cr_assert(a.is_unix);
        cr_assert_str_eq(a.path, "/run/tarry/status.sock");
        cr_assert_eq(status_parse_listen("127.0.0.1:8025", &a, &why), 0);
        cr_assert_str_eq(a.host, "127.0.0.1");
        cr_assert_eq(a.port, 8025);
        cr_assert_eq(status_parse_listen("[::1]:0", &a, &why), 0);
        cr_assert_str_eq(a.host, "::1");
        cr_assert_eq(status_parse_listen("localhost:9", &a, &why), 0);
        cr_assert_str_eq(a.host, "127.0.0.1");
        cr_assert_eq(status_parse_listen("unix:relative", &a, &why), -EINVAL);
        cr_assert_eq(status_parse_listen("example.com:80", &a, &why), -EINVAL);
        cr_assert_eq(status_parse_listen("127.0.0.1:65536", &a, &why), -EINVAL);
        cr_assert_eq(status_parse_listen("::1:80", &a, &why), -EINVAL);
        cr_assert(status_addr_is_loopback("127.3.4.5"));
        cr_assert(status_addr_is_loopback("::1"));
        cr_assert(status_addr_is_loopback("::ffff:127.0.0.1"));
        cr_assert_not(status_addr_is_loopback("0.0.0.0"));
        cr_assert_not(status_addr_is_loopback("::"));
        cr_assert_not(status_addr_is_loopback("192.0.2.1"));
}

Test(request, only_the_listening_address_or_localhost_may_be_the_host)
{
        struct status_listen_addr a, v6, any;
        const char *why;
        cr_assert_eq(status_parse_listen("127.0.0.1:8025", &a, &why), 0);
        cr_assert(status_host_allowed("127.0.0.1:8025", &a, 8025));
        cr_assert(status_host_allowed("127.0.0.1", &a, 8025));
        cr_assert(status_host_allowed("localhost:8025", &a, 8025));
        cr_assert(status_host_allowed("LOCALHOST", &a, 8025));
        cr_assert(status_host_allowed(NULL, &a, 8025), "HTTP/1.0 without Host");
        cr_assert_not(status_host_allowed("evil.example:8025", &a, 8025), "DNS rebinding");
        cr_assert_not(status_host_allowed("127.0.0.1:8026", &a, 8025), "another port");
        cr_assert_not(status_host_allowed("127.0.0.2:8025", &a, 8025), "another address");
        cr_assert_not(status_host_allowed("", &a, 8025));
        cr_assert_not(status_host_allowed("127.0.0.1:", &a, 8025));
        cr_assert_not(status_host_allowed("localhost.evil.example", &a, 8025));
        cr_assert_eq(status_parse_listen("[::1]:8025", &v6, &why), 0);
        cr_assert(status_host_allowed("[::1]:8025", &v6, 8025));
        cr_assert(status_host_allowed("[0::1]", &v6, 8025));
        cr_assert_not(status_host_allowed("::1", &v6, 8025));
        cr_assert_not(status_host_allowed("[::1", &v6, 8025));
        cr_assert_eq(status_parse_listen("0.0.0.0:8025", &any, &why), 0);
        cr_assert(status_host_allowed("192.0.2.7:8025", &any, 8025), "any IP on a wildcard");
        cr_assert_not(status_host_allowed("evil.example", &any, 8025));
}

Test(request, a_request_line_with_many_query_arguments_is_refused)
{
        const char *why = NULL;
        char uri[4096] = "/status?";
        cr_assert_eq(status_check_uri("/status", &why), 0);
        cr_assert_eq(status_check_uri("/queue?class=greylist&state=deferred&limit=5", &why), 0);
        for (int i = 0; i < 16; i++)
                strcat(uri, i ? "&a=1" : "a=1");
        cr_assert_eq(status_check_uri(uri, &why), 0, "16 arguments");
        strcat(uri, "&b");
        cr_assert_eq(status_check_uri(uri, &why), -E2BIG, "17 arguments");
        cr_assert_not_null(strstr(why, "query arguments"));
}
