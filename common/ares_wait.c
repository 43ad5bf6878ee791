/* common/ares_wait.c — see ares_wait.h. */
#include "common/ares_wait.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void ares_wait_done(ares_channel ch, bool *done)
{
        while (!*done) {
                ares_socket_t socks[ARES_GETSOCK_MAXNUM];
                struct pollfd pfd[ARES_GETSOCK_MAXNUM];
                /* c-ares' ARES_GETSOCK_WRITABLE shifts a signed 1 by up to 31
                 * places (undefined behaviour): read the bits unsigned */
                unsigned bits = (unsigned)ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
                nfds_t n = 0;
                for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
                        short ev =
                            (short)(((bits >> i) & 1u ? POLLIN : 0) |
                                    ((bits >> (i + ARES_GETSOCK_MAXNUM)) & 1u ? POLLOUT : 0));
                        if (ev)
                                pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
                }
                struct timeval tv, *tvp = ares_timeout(ch, NULL, &tv);
                int ms = tvp ? (int)(tvp->tv_sec * 1000 + tvp->tv_usec / 1000) + 1 : 1000;
                int r = poll(pfd, n, ms);
                if (r < 0 && errno != EINTR)
                        break;
                if (r <= 0) {
                        ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
                        continue;
                }
                for (nfds_t i = 0; i < n; i++)
                        ares_process_fd(ch,
                                        pfd[i].revents & (POLLIN | POLLERR | POLLHUP)
                                            ? pfd[i].fd
                                            : ARES_SOCKET_BAD,
                                        pfd[i].revents & POLLOUT ? pfd[i].fd : ARES_SOCKET_BAD);
        }
        if (!*done) {
                ares_cancel(ch);
                *done = true;
        }
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
        struct ares_wait_answer *a = arg;
        (void)timeouts;
        a->done = true;
        a->status = status;
        if (status == ARES_SUCCESS && abuf && alen > 0 && (a->buf = malloc((size_t)alen))) {
                memcpy(a->buf, abuf, (size_t)alen);
                a->len = alen;
        }
}

void ares_wait_query(ares_channel ch, const char *name, int dnsclass, int type,
                     struct ares_wait_answer *out)
{
        *out = (struct ares_wait_answer){0};
        ares_query(ch, name, dnsclass, type, on_answer, out);
        ares_wait_done(ch, &out->done);
}
