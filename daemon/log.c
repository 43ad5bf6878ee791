/* daemon/log.c — journal or stderr; see log.h.
 *
 * Log lines carry text from outside (servers' replies, addresses, host
 * names): every line and field is escaped here, in one place, before it
 * leaves, so an ESC sequence or a stray byte from a remote server cannot
 * repaint an administrator's terminal or forge a line.
 */
#include "daemon/log.h"
#include "common/utf8.h"

#include <pthread.h>
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
static bool opened;
static pid_t self_pid;        /* getpid() is a syscall: once, at log_open */
static pthread_t loop_thread; /* the thread that called log_open: tarryd's loop */

void log_open(void)
{
        to_journal = getenv("JOURNAL_STREAM") != NULL;
        self_pid = getpid();
        loop_thread = pthread_self();
        opened = true;
        /* Records of one loop iteration leave in one write (log_flush), not
         * one each: a drain logs two or three per message. */
        if (!to_journal)
                setvbuf(stderr, NULL, _IOFBF, 1 << 16);
}

void log_flush(void)
{
        if (!to_journal)
                fflush(stderr);
}

static void format_stamp(time_t t, char *out, size_t len)
{
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(out, len, "%b %e %H:%M:%S %z", &tm); /* the zone: logs get compared */
}

static void to_stderr(const char *text)
{
        /* the loop's records wait for its log_flush and share one stamp per
         * second (a drain logs two or three records per message); another
         * thread's (the sender check) are flushed at once, or they would
         * wait for the loop's next busy iteration */
        bool loop = opened && pthread_equal(pthread_self(), loop_thread);
        static time_t loop_stamp_at = -1; /* the loop's only */
        static char loop_stamp[32];
        char own[32];
        const char *stamp = loop_stamp;
        time_t t = time(NULL);
        if (!loop) {
                format_stamp(t, own, sizeof(own));
                stamp = own;
        } else if (t != loop_stamp_at) {
                format_stamp(t, loop_stamp, sizeof(loop_stamp));
                loop_stamp_at = t;
        }
        fprintf(stderr, "%s tarryd[%d]: %s\n", stamp, (int)(opened ? self_pid : getpid()), text);
        if (!loop)
                fflush(stderr);
}

/* Control characters (newlines and tabs too), DEL and bytes that are not
 * part of well-formed UTF-8 become \xHH; printable ASCII and well-formed
 * UTF-8 are kept. Truncates at a whole character, always terminates. */
static void escape(const char *in, char *out, size_t outsz)
{
        const unsigned char *s = (const unsigned char *)in;
        size_t o = 0, left = strlen(in);
        while (left > 0) {
                size_t n = *s >= 0x80 ? utf8_seq_len(s, left) : 1;
                bool plain = n > 1 || (*s >= 0x20 && *s < 0x7f);
                size_t need = plain ? n : 4;
                if (o + need >= outsz)
                        break;
                if (plain)
                        memcpy(out + o, s, n);
                else
                        snprintf(out + o, 5, "\\x%02x", *s);
                o += need;
                s += plain ? n : 1;
                left -= plain ? n : 1;
        }
        out[o] = '\0';
}

void log_msg(int priority, const char *fmt, ...)
{
        char raw[4096], text[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        escape(raw, text, sizeof(text));
        if (to_journal)
                sd_journal_send("MESSAGE=%s", text, "PRIORITY=%d", priority,
                                "SYSLOG_IDENTIFIER=tarryd", NULL);
        else
                to_stderr(text);
}

void log_record(int priority, const struct log_fields *f, const char *fmt, ...)
{
        char raw[8192], text[8192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        escape(raw, text, sizeof(text));
        if (!to_journal) {
                to_stderr(text);
                return;
        }
        const char *names[] = {"TARRY_QUEUE_ID", "TARRY_RCPT",  "TARRY_STATUS",
                               "TARRY_DSN",      "TARRY_RELAY", "TARRY_CLASS"};
        const char *values[] = {f->queue_id, f->rcpt, f->status, f->dsn, f->relay, f->reply_class};
        char buf[8][1024], value[1000];
        struct iovec iov[10];
        int n = 0;
        snprintf(buf[n], sizeof(buf[n]), "PRIORITY=%d", priority);
        iov[n] = (struct iovec){buf[n], strlen(buf[n])};
        n++;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                if (!values[i])
                        continue;
                escape(values[i], value, sizeof(value));
                snprintf(buf[n], sizeof(buf[n]), "%s=%s", names[i], value);
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
