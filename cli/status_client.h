/* cli/status_client.h — tarryq's side of the status endpoint: HTTP over the
 * daemon's unix socket (preferred) or loopback TCP, with libcurl.
 *
 * Input: the `status_listen` entries of the configuration. Output: the HTTP
 * code and body of one request. Keeps "the daemon is not answering" (no
 * socket, connection refused, connect timeout, connection dropped before a
 * reply) apart from HTTP errors, so tarryq can fall back to reading the spool
 * and say so on stderr, as postqueue does.
 */
#ifndef TARRY_CLI_STATUS_CLIENT_H
#define TARRY_CLI_STATUS_CLIENT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define STATUS_CLIENT_CONNECT_TIMEOUT_MS 2000
#define STATUS_CLIENT_TIMEOUT_MS         30000
#define STATUS_CLIENT_MAX_BODY           (256u << 20) /* refuse larger replies */

/* Returned when no endpoint answered at all. */
#define STATUS_CLIENT_NOT_ANSWERING (-EHOSTDOWN)

struct status_client;

/* Endpoints in order of preference: every "unix:/path" entry first, then TCP
 * entries as loopback URLs (a wildcard "0.0.0.0:p" / "[::]:p" is reached at
 * 127.0.0.1 / [::1]). -ENOENT when listen has no usable entry. */
int status_client_new(const char *const *listen, struct status_client **out);
void status_client_free(struct status_client *c);

/* One request: method "GET", "POST" or "DELETE"; path starting with "/"
 * (query included). Tries each endpoint until one answers. Returns 0 when an
 * HTTP reply came back (any code; *body is NUL-terminated, caller frees),
 * STATUS_CLIENT_NOT_ANSWERING when none did, -EINVAL for a bad method or
 * path, -EFBIG for an oversized reply, -EPROTO for another transfer error
 * (see status_client_last_error), -ENOMEM. */
int status_client_request(struct status_client *c, const char *method, const char *path,
                          long *http_code, char **body, size_t *body_len);

/* The same for a long reply: a 200's body is handed to sink piece by piece
 * as it arrives (not kept); sink returns 0, or a negative errno that stops
 * the transfer and is returned. Any other code's body is in *body as above.
 * An endpoint is given up for the next only before sink got anything; a
 * reply cut short after that is -EPROTO. */
int status_client_request_stream(struct status_client *c, const char *method, const char *path,
                                 long *http_code,
                                 int (*sink)(const char *data, size_t len, void *userdata),
                                 void *userdata, char **body, size_t *body_len);

/* The same, with the body parsed as JSON (-EBADMSG if it is not). */
int status_client_request_json(struct status_client *c, const char *method, const char *path,
                               long *http_code, json_t **out);

/* Why the last request failed or which endpoint answered, for messages:
 * "unix:/run/tarry/status.sock: Couldn't connect to server". */
const char *status_client_last_error(const struct status_client *c);
/* The endpoint that answered last ("unix:/path" or "http://127.0.0.1:8025"), or NULL. */
const char *status_client_endpoint(const struct status_client *c);

#endif
