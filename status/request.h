/* status/request.h — private to status/: parsing of what a client sends.
 *
 * Each input crossing the trust boundary has one function here with explicit
 * length limits (fuzz targets): the method + path, and each query argument.
 * No I/O, no allocation.
 */
#ifndef TARRY_STATUS_REQUEST_H
#define TARRY_STATUS_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "status/status.h"

#define STATUS_MAX_PATH 512

enum status_route {
        ROUTE_STATUS,
        ROUTE_QUEUE,
        ROUTE_MESSAGE,
        ROUTE_METRICS,
        ROUTE_ACTION, /* admin: see action */
};

struct status_request {
        enum status_route route;
        bool admin;
        enum status_action action;
        char target[STATUS_MAX_DESTINATION + 1]; /* queue ID or destination name, or "" */
};

/* Match method + (decoded) path against the route table.
 * Returns 0, or -ENOENT (no such path: 404), -EOPNOTSUPP (path exists, not
 * with this method: 405, *allow names the methods), -EINVAL (bad queue ID or
 * destination: 400), with a static reason in *why. HEAD is taken as GET. */
int status_parse_request(const char *method, const char *path, struct status_request *out,
                         const char **allow, const char **why);

/* Apply one query argument of GET /queue to the filter. *seen tracks the keys
 * already given (start at 0): repeating one is an error. value may be NULL
 * ("?class"). Returns 0 or -EINVAL with a static reason. */
int status_parse_queue_arg(struct status_queue_filter *f, unsigned *seen, const char *key,
                           const char *value, const char **why);

/* A default filter: any class, destination and state, first page. */
void status_queue_filter_init(struct status_queue_filter *f);

/* The most query arguments a request may carry: GET /queue takes five.
 * libmicrohttpd keeps each argument in the connection's memory, and ~500
 * of them exhausted it, leaving the connection unanswered until its
 * timeout; such a request is refused when its request line is seen. */
#define STATUS_MAX_QUERY_ARGS 16

/* The raw request target as the client sent it: -E2BIG with a static reason
 * when it has more than STATUS_MAX_QUERY_ARGS query arguments. */
int status_check_uri(const char *uri, const char **why);

/* May a request with this Host header (NULL: none, as in HTTP/1.0) be served
 * on TCP listener a, bound to port? Only the listening address itself (any
 * IP literal for a wildcard address) or "localhost", with no port or the
 * bound one: a web page that rebinds its own name to 127.0.0.1 sends that
 * name, and is refused. */
bool status_host_allowed(const char *host, const struct status_listen_addr *a, int port);

/* Destination names: a domain or next hop, [A-Za-z0-9.-_:[\]], 1..255 bytes. */
bool status_destination_valid(const char *s);

#endif
