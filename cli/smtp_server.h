/* cli/smtp_server.h — `sendmail -bs`: an SMTP session on stdin/stdout.
 *
 * Enough SMTP for local submission clients (Symfony Mailer, PHPMailer):
 * HELO/EHLO, MAIL FROM (SIZE BODY RET ENVID), RCPT TO (NOTIFY ORCPT), DATA
 * with dot-unstuffing, RSET, NOOP, QUIT. Each transaction goes through
 * cli/submit into its own queue draft; 250 is sent only after the commit
 * returned 0, so "accepted" always means "durable".
 */
#ifndef TARRY_CLI_SMTP_SERVER_H
#define TARRY_CLI_SMTP_SERVER_H

#include <stdio.h>

#include "config/config.h"
#include "queue/queue.h"

#define SMTP_RCPT_LIMIT  1000 /* per transaction, like Postfix's smtpd_recipient_limit */
#define SMTP_ERROR_LIMIT 20   /* then 421 and hang up, like smtpd_hard_error_limit */

/* Run one session reading commands from in_fd and replying on out.
 * Returns a sysexits code (0 after QUIT or end of input). */
int smtp_server_run(const struct tarry_config *cfg, struct queue *q, int in_fd, FILE *out);

#endif
