/* cli/smtp_server.c — the sendmail -bs session; see smtp_server.h. */
#include "cli/smtp_server.h"
#include "cli/cli_util.h"
#include "cli/linereader.h"
#include "cli/smtp_parse.h"
#include "cli/submit.h"
#include "common/cleanup.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define ENVID_MAX 100 /* RFC 3461 4.4 */
#define ORCPT_MAX 500

struct session {
        const struct tarry_config *cfg;
        struct queue *q;
        FILE *out;
        struct line_reader lr;
        struct envelope *env; /* the transaction after MAIL, else NULL */
        int queued;           /* messages committed in this session */
        int errors;
        bool closed; /* QUIT, end of input, or too many errors */
};

static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct session *s, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vfprintf(s->out, fmt, ap);
        va_end(ap);
        fputs("\r\n", s->out);
        if (fflush(s->out) != 0)
                s->closed = true; /* the client is gone */
}

/* A 4xx/5xx reply that counts toward the hard error limit. */
static void error_reply(struct session *s, const char *text)
{
        reply(s, "%s", text);
        if (++s->errors >= SMTP_ERROR_LIMIT) {
                reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->myhostname);
                s->closed = true;
        }
}

static void reset(struct session *s)
{
        envelope_free(s->env);
        s->env = NULL;
}

/* The process's user for the envelope: who handed us the mail. */
static int set_user(struct envelope *env)
{
        env->uid = getuid();
        struct passwd *pw = getpwuid(env->uid);
        char num[32];
        snprintf(num, sizeof(num), "%u", (unsigned)env->uid);
        env->user = strdup(pw ? pw->pw_name : num);
        return env->user ? 0 : -ENOMEM;
}

static void do_ehlo(struct session *s, const struct smtp_cmd *c)
{
        reset(s);
        if (c->verb == SMTP_HELO) {
                reply(s, "250 %s", s->cfg->myhostname);
                return;
        }
        reply(s, "250-%s", s->cfg->myhostname);
        reply(s, "250-PIPELINING");
        if (s->cfg->message_size_limit > 0)
                reply(s, "250-SIZE %llu", (unsigned long long)s->cfg->message_size_limit);
        else
                reply(s, "250-SIZE");
        reply(s, "250-8BITMIME");
        reply(s, "250-DSN");
        reply(s, "250 ENHANCEDSTATUSCODES");
}

/* One MAIL FROM parameter into env. NULL when fine, else the error reply. */
static const char *mail_param(struct session *s, const struct smtp_param *p, struct envelope *env)
{
        if (strcmp(p->name, "SIZE") == 0) {
                char *end;
                unsigned long long n = strtoull(p->value, &end, 10);
                if (!*p->value || *end)
                        return "501 5.5.4 Bad message size syntax";
                if (s->cfg->message_size_limit > 0 && n > s->cfg->message_size_limit)
                        return "552 5.3.4 Message size exceeds fixed limit";
                return NULL;
        }
        if (strcmp(p->name, "BODY") == 0)
                return strcasecmp(p->value, "7BIT") == 0 || strcasecmp(p->value, "8BITMIME") == 0
                           ? NULL
                           : "501 5.5.4 Bad BODY parameter syntax";
        if (strcmp(p->name, "RET") == 0) {
                if (strcasecmp(p->value, "FULL") == 0)
                        env->ret = DSN_RET_FULL;
                else if (strcasecmp(p->value, "HDRS") == 0)
                        env->ret = DSN_RET_HDRS;
                else
                        return "501 5.5.4 Bad RET parameter syntax";
                return NULL;
        }
        if (strcmp(p->name, "ENVID") == 0) {
                if (!*p->value || strlen(p->value) > ENVID_MAX || !cli_xtext_valid(p->value) ||
                    env->envid)
                        return "501 5.5.4 Bad ENVID parameter syntax";
                env->envid = strdup(p->value);
                return env->envid ? NULL : "451 4.3.0 Error: out of memory";
        }
        return "555 5.5.4 Unsupported option";
}

static void do_mail(struct session *s, const struct smtp_cmd *c)
{
        if (s->env) {
                error_reply(s, "503 5.5.1 Error: nested MAIL command");
                return;
        }
        int limit = s->cfg->maildrop_message_limit;
        if (queue_is_maildrop(s->q) && limit > 0 && s->queued >= limit) {
                reply(s,
                      "452 4.3.1 Error: %d messages in one session is the limit "
                      "(maildrop_message_limit); start a new session",
                      limit);
                return;
        }
        _cleanup_(envelope_freep) struct envelope *env = envelope_new();
        if (!env || set_user(env) < 0) {
                reply(s, "451 4.3.0 Error: out of memory");
                return;
        }
        if (c->arg[0]) {
                const char *why;
                char *a = NULL;
                if (cli_qualify(c->arg, strlen(c->arg), s->cfg->myorigin, &a, &why) < 0) {
                        error_reply(s, "501 5.1.7 Bad sender address syntax");
                        return;
                }
                free(env->sender);
                env->sender = a;
        }
        if (!cfg_sender_allowed(s->cfg, env->uid, env->user, env->sender)) {
                error_reply(s, "553 5.7.1 Error: this user may not set the envelope sender "
                               "(allow_sender_override)");
                return;
        }
        for (size_t i = 0; i < c->n_params; i++) {
                const char *err = mail_param(s, &c->params[i], env);
                if (err) {
                        error_reply(s, err);
                        return;
                }
        }
        s->env = TAKE_PTR(env);
        reply(s, "250 2.1.0 Ok");
}

/* NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY; 0 when malformed. */
static unsigned parse_notify(const char *v)
{
        static const struct {
                const char *name;
                unsigned bit;
        } names[] = {{"NEVER", NOTIFY_NEVER},
                     {"SUCCESS", NOTIFY_SUCCESS},
                     {"FAILURE", NOTIFY_FAILURE},
                     {"DELAY", NOTIFY_DELAY}};
        unsigned bits = 0;
        while (*v) {
                size_t n = strcspn(v, ",");
                unsigned bit = 0;
                for (size_t i = 0; i < ELEMENTSOF(names); i++)
                        if (strlen(names[i].name) == n && strncasecmp(v, names[i].name, n) == 0)
                                bit = names[i].bit;
                if (!bit || (bits & bit))
                        return 0;
                bits |= bit;
                v += n + (v[n] == ',');
        }
        if ((bits & NOTIFY_NEVER) && bits != NOTIFY_NEVER)
                return 0;
        return bits;
}

/* ORCPT=addr-type;xtext */
static bool orcpt_ok(const char *v)
{
        const char *semi = strchr(v, ';');
        return semi && semi > v && semi[1] && strlen(v) <= ORCPT_MAX && cli_xtext_valid(semi + 1);
}

static const char *rcpt_params(const struct smtp_cmd *c, struct envelope_rcpt *r)
{
        for (size_t i = 0; i < c->n_params; i++) {
                const struct smtp_param *p = &c->params[i];
                if (strcmp(p->name, "NOTIFY") == 0) {
                        if (!(r->notify = parse_notify(p->value)))
                                return "501 5.5.4 Error: Bad NOTIFY parameter syntax";
                } else if (strcmp(p->name, "ORCPT") == 0) {
                        if (!orcpt_ok(p->value) || r->orcpt)
                                return "501 5.5.4 Error: Bad ORCPT parameter syntax";
                        if (!(r->orcpt = strdup(p->value)))
                                return "451 4.3.0 Error: out of memory";
                } else {
                        return "555 5.5.4 Unsupported option";
                }
        }
        return NULL;
}

static void do_rcpt(struct session *s, const struct smtp_cmd *c)
{
        if (!s->env) {
                error_reply(s, "503 5.5.1 Error: need MAIL command");
                return;
        }
        if (s->env->n_rcpt >= SMTP_RCPT_LIMIT) {
                reply(s, "452 4.5.3 Error: too many recipients");
                return;
        }
        const char *why;
        _cleanup_free_ char *a = NULL;
        if (!c->arg[0] ||
            cli_qualify(c->arg, strlen(c->arg), cfg_rcpt_origin(s->cfg), &a, &why) < 0) {
                error_reply(s, "501 5.1.3 Bad recipient address syntax");
                return;
        }
        struct envelope_rcpt probe = {0};
        const char *err = rcpt_params(c, &probe);
        if (err) {
                free(probe.orcpt);
                {
                        error_reply(s, err);
                        return;
                }
        }
        size_t before = s->env->n_rcpt;
        if (cli_add_rcpt(s->env, a) < 0) {
                free(probe.orcpt);
                {
                        reply(s, "451 4.3.0 Error: out of memory");
                        return;
                }
        }
        if (s->env->n_rcpt > before) {
                s->env->rcpt[before].notify = probe.notify;
                s->env->rcpt[before].orcpt = probe.orcpt;
        } else {
                free(probe.orcpt); /* a duplicate: the first one stands */
        }
        reply(s, "250 2.1.5 Ok");
}

/* Read DATA up to the end-of-data line into sub. 1: the terminator came; 0: end of input.
 *
 * SMTP smuggling (the CVE-2023-51764 family): only <CRLF>.<CRLF> ends DATA.
 * As Postfix's smtpd_forbid_bare_newline = normalize: a bare LF still ends a
 * line of the message (stored as CRLF), but it is not a line end by RFC 5321,
 * so a "." after it is data (neither end of data nor dot-stuffing), and a "."
 * line ended by a bare LF is no end of data either. A bare CR is data. So
 * <LF>.<LF>, <CR>.<CR>, <LF>.<CR><LF>, <CR><LF>.<LF> and <CR>.<CR><LF> all
 * stay inside the message, and what follows them is message text. */
static int read_data(struct session *s, struct submit *sub)
{
        bool line_start = true; /* after a CRLF (or the DATA command) */
        for (;;) {
                const char *p;
                size_t n;
                bool eol;
                int r = lr_next(&s->lr, 0, &p, &n, &eol);
                if (r <= 0)
                        return 0;
                if (line_start && eol && s->lr.crlf && n == 1 && p[0] == '.')
                        return 1;
                if (line_start && n > 0 && p[0] == '.')
                        p++, n--;            /* dot-unstuffing, RFC 5321 4.5.2 */
                submit_line(sub, p, n, eol); /* errors are sticky: read on to the "." */
                line_start = eol && s->lr.crlf;
        }
}

static void finish_data(struct session *s, struct submit *sub)
{
        int r = submit_finish(sub, s->env);
        if (r == 0)
                r = submit_commit(sub, s->env);
        if (r == 0) {
                s->queued++;
                reply(s, "250 2.0.0 Ok: queued as %s", s->env->id);
        } else if (r == -EMSGSIZE)
                reply(s, "552 5.3.4 Error: %s", submit_error(sub));
        else if (r == -EBADMSG)
                reply(s, "550 5.6.0 Error: %s", submit_error(sub));
        else
                reply(s, "451 4.3.0 Error: queue file write error");
}

static void do_data(struct session *s)
{
        if (!s->env) {
                error_reply(s, "503 5.5.1 Error: need RCPT command");
                return;
        }
        if (s->env->n_rcpt == 0) {
                error_reply(s, "554 5.5.1 Error: no valid recipients");
                return;
        }
        struct submit_opts o = {
            .cfg = s->cfg,
            .from_addr = s->env->sender[0] ? s->env->sender : NULL,
        };
        char from[400];
        if (!o.from_addr) {
                snprintf(from, sizeof(from), "%s@%s", s->env->user, s->cfg->myorigin);
                o.from_addr = from;
        }
        struct submit *sub = NULL;
        if (submit_begin(s->q, &o, &sub) < 0) {
                reset(s);
                {
                        reply(s, "451 4.3.0 Error: queue file write error");
                        return;
                }
        }
        reply(s, "354 End data with <CR><LF>.<CR><LF>");
        if (read_data(s, sub) == 1)
                finish_data(s, sub);
        else
                s->closed = true; /* the client went away mid-message: nothing is queued */
        submit_free(sub);
        reset(s);
}

static void dispatch(struct session *s, const struct smtp_cmd *c)
{
        switch (c->verb) {
        case SMTP_HELO:
        case SMTP_EHLO: {
                do_ehlo(s, c);
                return;
        }
        case SMTP_MAIL: {
                do_mail(s, c);
                return;
        }
        case SMTP_RCPT: {
                do_rcpt(s, c);
                return;
        }
        case SMTP_DATA: {
                do_data(s);
                return;
        }
        case SMTP_RSET:
                reset(s);
                {
                        reply(s, "250 2.0.0 Ok");
                        return;
                }
        case SMTP_NOOP: {
                reply(s, "250 2.0.0 Ok");
                return;
        }
        case SMTP_QUIT:
                reply(s, "221 2.0.0 Bye");
                s->closed = true;
                return;
        case SMTP_VRFY: {
                error_reply(s, "502 5.5.1 VRFY command is disabled");
                return;
        }
        default: {
                error_reply(s, "500 5.5.2 Error: command not recognized");
                return;
        }
        }
}

/* Read one command line; lines over the limit are drained and refused. 0 at end of input. */
static int next_command(struct session *s, char *buf, size_t *len)
{
        const char *p;
        size_t n;
        bool eol;
        int r = lr_next(&s->lr, SMTP_LINE_MAX, &p, &n, &eol);
        if (r <= 0)
                return 0;
        if (eol) {
                memcpy(buf, p, n);
                *len = n;
                return 1;
        }
        while (!eol && lr_next(&s->lr, 0, &p, &n, &eol) > 0)
                ;
        *len = SMTP_LINE_MAX + 1;
        return 1;
}

int smtp_server_run(const struct tarry_config *cfg, struct queue *q, int in_fd, FILE *out)
{
        struct session *s = calloc(1, sizeof(*s));
        if (!s)
                return 71; /* EX_OSERR */
        s->cfg = cfg;
        s->q = q;
        s->out = out;
        lr_init(&s->lr, in_fd);
        reply(s, "220 %s ESMTP tarry", cfg->myhostname);
        char line[SMTP_LINE_MAX + 1];
        size_t len;
        while (!s->closed && next_command(s, line, &len)) {
                struct smtp_cmd cmd;
                const char *why = NULL;
                if (len > SMTP_LINE_MAX) {
                        error_reply(s, "500 5.5.2 Error: line too long");
                        continue;
                }
                if (smtp_parse_command(line, len, &cmd, &why) < 0) {
                        char text[128];
                        snprintf(text, sizeof(text), "501 5.5.4 %s", why);
                        error_reply(s, text);
                        continue;
                }
                dispatch(s, &cmd);
        }
        reset(s);
        free(s);
        return 0;
}
