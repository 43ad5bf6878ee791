/* queue/listing.c — a queued message as Postfix's postqueue -j shows it,
 * plus tarry's class, next_attempt and attempts. One source for tarryq's
 * offline listing and tarryd's status endpoint; see queue.h. */
#include "queue/queue.h"

#include <stdio.h>
#include <string.h>

#define EMPTY_SENDER "MAILER-DAEMON" /* Postfix's empty_address_recipient */

/* Recipients a listing shows: those still to be delivered. */
bool queue_rcpt_waiting(const struct envelope_rcpt *r)
{
        return r->state == RCPT_PENDING || r->state == RCPT_DEFERRED;
}

/* The relay without a ":port" after its "[ip]". */
static int relay_len(const char *relay)
{
        const char *end = strrchr(relay, ']');
        if (end && end[1] == ':')
                return (int)(end + 1 - relay);
        return (int)strlen(relay);
}

const char *queue_delay_reason(const struct envelope_rcpt *r, char *buf, size_t len)
{
        buf[0] = '\0';
        if (r->state != RCPT_DEFERRED)
                return buf;
        const char *text = r->last_reply ? r->last_reply : "";
        char code[32] = "";
        if (r->reply_code > 0) {
                char c3[16];
                snprintf(c3, sizeof(c3), "%d", r->reply_code);
                if (strncmp(text, c3, 3) != 0) /* the text may carry its code already */
                        snprintf(code, sizeof(code), "%d %s%s", r->reply_code,
                                 r->dsn_status ? r->dsn_status : "", r->dsn_status ? " " : "");
        }
        if (!*text && !*code)
                return buf;
        /* "host[ip]:port" is shown as Postfix does: "host[ip]"; a reason of
         * tarry's own (no reply code: a timeout, a lost connection) already
         * names the host and is shown as it is */
        if (r->relay && r->reply_code > 0)
                snprintf(buf, len, "host %.*s said: %s%s", relay_len(r->relay), r->relay, code,
                         text);
        else
                snprintf(buf, len, "%s%s", code, text);
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == ' ')
                buf[--n] = '\0';
        return buf;
}

const char *queue_sender_shown(const struct envelope *env)
{
        return env->sender && *env->sender ? env->sender : EMPTY_SENDER;
}

static json_t *time_or_null(int64_t us)
{
        return us > 0 ? json_integer(us / 1000000) : json_null();
}

static json_t *rcpt_json(const struct envelope_rcpt *r)
{
        char why[9000];
        json_t *o = json_object();
        json_object_set_new(o, "address", json_string(r->address));
        if (*queue_delay_reason(r, why, sizeof(why)))
                json_object_set_new(o, "delay_reason", json_string(why));
        json_object_set_new(o, "class", r->reply_class ? json_string(r->reply_class) : json_null());
        json_object_set_new(o, "next_attempt",
                            time_or_null(r->state == RCPT_DEFERRED ? r->next_attempt_us : 0));
        json_object_set_new(o, "attempts", json_integer(r->attempts));
        return o;
}

/* The message-level tarry fields: the recipient due first sets class and next_attempt. */
static void add_summary(json_t *o, const struct envelope *env)
{
        const struct envelope_rcpt *first = NULL;
        int attempts = 0;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &env->rcpt[i];
                if (!queue_rcpt_waiting(r))
                        continue;
                if (r->attempts > attempts)
                        attempts = r->attempts;
                if (r->state == RCPT_DEFERRED &&
                    (!first || r->next_attempt_us < first->next_attempt_us))
                        first = r;
        }
        json_object_set_new(o, "class",
                            first && first->reply_class ? json_string(first->reply_class)
                                                        : json_null());
        json_object_set_new(o, "next_attempt", time_or_null(first ? first->next_attempt_us : 0));
        json_object_set_new(o, "attempts", json_integer(attempts));
}

json_t *queue_listing_json(const char *queue_name, const struct envelope *env)
{
        json_t *o = json_object();
        json_object_set_new(o, "queue_name", json_string(queue_name));
        json_object_set_new(o, "queue_id", json_string(env->id));
        json_object_set_new(o, "arrival_time", json_integer(env->arrival_us / 1000000));
        json_object_set_new(o, "message_size", json_integer((json_int_t)env->size));
        json_object_set_new(o, "forced_expire", json_false());
        json_object_set_new(o, "sender", json_string(queue_sender_shown(env)));
        json_t *rcpts = json_array();
        for (size_t i = 0; i < env->n_rcpt; i++)
                if (queue_rcpt_waiting(&env->rcpt[i]))
                        json_array_append_new(rcpts, rcpt_json(&env->rcpt[i]));
        json_object_set_new(o, "recipients", rcpts);
        add_summary(o, env);
        return o;
}
