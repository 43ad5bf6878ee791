/* daemon/log.h — tarryd's log: Postfix-style one-line records.
 *
 * Under systemd ($JOURNAL_STREAM set) records go to the journal with
 * structured fields (TARRY_QUEUE_ID, TARRY_RCPT, TARRY_CLASS, TARRY_DSN,
 * TARRY_RELAY, TARRY_STATUS) so `journalctl TARRY_QUEUE_ID=…` finds a
 * message's history; otherwise to stderr, prefixed with the time.
 */
#ifndef TARRY_DAEMON_LOG_H
#define TARRY_DAEMON_LOG_H

#include <syslog.h>

/* Decide journal or stderr once, at start. */
void log_open(void);

/* Without the journal, records are buffered: write them out. tarryd calls
 * this once per loop iteration, before READY=1 and at exit (stdio's own
 * flush); a crash may lose the records of the iteration it happened in. */
void log_flush(void);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Structured fields of a delivery record; NULL fields are left out. */
struct log_fields {
        const char *queue_id;
        const char *rcpt;
        const char *status; /* sent | deferred | bounced | expired */
        const char *dsn;
        const char *relay;
        const char *reply_class;
};

void log_record(int priority, const struct log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)

#endif
