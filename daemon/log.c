/* daemon/log.c — journal or stderr; see log.h. */
#include "daemon/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static bool to_journal; /* daemon/ may hold process-wide state */

void log_open(void)
{
        to_journal = getenv("JOURNAL_STREAM") != NULL;
}

static void to_stderr(const char *text)
{
        char stamp[32];
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
        fprintf(stderr, "%s tarryd[%d]: %s\n", stamp, (int)getpid(), text);
}

void log_msg(int priority, const char *fmt, ...)
{
        char text[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        if (to_journal)
                sd_journal_send("MESSAGE=%s", text, "PRIORITY=%d", priority,
                                "SYSLOG_IDENTIFIER=tarryd", NULL);
        else
                to_stderr(text);
}

void log_record(int priority, const struct log_fields *f, const char *fmt, ...)
{
        char text[8192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        if (!to_journal) {
                to_stderr(text);
                return;
        }
        const char *names[] = {"TARRY_QUEUE_ID", "TARRY_RCPT",  "TARRY_STATUS",
                               "TARRY_DSN",      "TARRY_RELAY", "TARRY_CLASS"};
        const char *values[] = {f->queue_id, f->rcpt, f->status, f->dsn, f->relay, f->reply_class};
        char buf[8][1024];
        struct iovec iov[10];
        int n = 0;
        snprintf(buf[n], sizeof(buf[n]), "PRIORITY=%d", priority);
        iov[n] = (struct iovec){buf[n], strlen(buf[n])};
        n++;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                if (!values[i])
                        continue;
                snprintf(buf[n], sizeof(buf[n]), "%s=%s", names[i], values[i]);
                iov[n] = (struct iovec){buf[n], strlen(buf[n])};
                n++;
        }
        static const char ident[] = "SYSLOG_IDENTIFIER=tarryd";
        iov[n++] = (struct iovec){(void *)ident, sizeof(ident) - 1};
        char msg[8200];
        snprintf(msg, sizeof(msg), "MESSAGE=%s", text);
        iov[n++] = (struct iovec){msg, strlen(msg)};
        sd_journal_sendv(iov, n);
}
