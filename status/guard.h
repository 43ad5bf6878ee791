/* status/guard.h — private to status/: keeps slow or hostile clients from
 * holding the status endpoint.
 *
 * libmicrohttpd's own connection timeout is an idle timeout: a client that
 * sends one header byte every few seconds keeps its slot for ever, and 80 of
 * them from 127.0.0.100-107 filled every slot past the per-address limit.
 * The guard gives each request a deadline from its first byte (or from the
 * end of the previous answer on a kept-alive connection) to the moment it is
 * answered, and when the listener is full it drops the oldest unanswered
 * request so that a new client always gets in. A dropped or refused request
 * gets a JSON error written straight to its socket (nothing else has been
 * written on it yet), then the socket is shut down, and libmicrohttpd closes
 * the connection on its next run.
 *
 * One guard per listener, on the listener's sd-event loop; no threads.
 */
#ifndef TARRY_STATUS_GUARD_H
#define TARRY_STATUS_GUARD_H

#include <stdint.h>

#include <microhttpd.h>
#include <systemd/sd-event.h>

struct guard;

/* limit: libmicrohttpd's connection limit for the listener; timeout_us: how
 * long a request may take to arrive. on_drop (may be NULL) is told the HTTP
 * code of every request the guard answers itself (408, or a refusal's). */
int guard_new(sd_event *event, unsigned limit, uint64_t timeout_us,
              void (*on_drop)(void *userdata, unsigned code), void *userdata, struct guard **out);
void guard_free(struct guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION: track a connection from start to close. */
void guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                  enum MHD_ConnectionNotificationCode code);

/* Answer c at once with code and why (a static string): through
 * libmicrohttpd if it gets as far as the access handler, else straight to
 * the socket. Used for requests libmicrohttpd would choke on (see
 * status_check_uri). */
void guard_refuse(struct guard *g, struct MHD_Connection *c, unsigned code, const char *why);
/* The refusal set for c, or NULL; *code gets its HTTP code. */
const char *guard_refusal(struct MHD_Connection *c, unsigned *code);

/* A response was queued on c: its deadline no longer applies. */
void guard_answered(struct MHD_Connection *c);
/* c finished a request and stays open: the next one has a new deadline. */
void guard_request_done(struct guard *g, struct MHD_Connection *c);

#endif
