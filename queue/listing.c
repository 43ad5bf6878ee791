/* queue/listing.c — a queued message as Postfix's postqueue -j shows it,
 * plus tarry's class, next_attempt and attempts. One source for tarryq's
 * offline listing and tarryd's status endpoint; see queue.h. */
#include "queue/queue.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

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

const char *queue_iso_time(int64_t us, char *buf, size_t len)
{
        time_t t = (time_t)(us / 1000000);
        struct tm tm;
        char zone[8];
        buf[0] = '\0';
        if (len < 26 || !localtime_r(&t, &tm) ||
            strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm) == 0 ||
            strftime(zone, sizeof(zone), "%z", &tm) != 5)
                return buf;
        /* ISO 8601 extended: "+01:00", not strftime's "+0100" */
        snprintf(buf + 19, len - 19, "%.3s:%.2s", zone, zone + 3);
        return buf;
}

const char *queue_wait_reason(const struct envelope_rcpt *r, const char *queue_name)
{
        if (queue_name && strcmp(queue_name, "hold") == 0)
                return "manual_hold";
        if (r->next_reason && *r->next_reason)
                return r->next_reason;
        if (r->state == RCPT_PENDING)
                return "first_attempt";
        return r->state == RCPT_DEFERRED ? "backoff" : "";
}

const char *queue_wait_words(const struct envelope_rcpt *r, const char *queue_name, char *buf,
                             size_t len)
{
        char why[9000], when[40] = "";
        queue_delay_reason(r, why, sizeof(why));
        const char *reason = queue_wait_reason(r, queue_name);
        if (r->next_attempt_us > 0)
                queue_iso_time(r->next_attempt_us, when, sizeof(when));
        const char *sep = *why ? "; " : "";
        if (strcmp(reason, "manual_hold") == 0)
                snprintf(buf, len, "%s%son hold: tarryq -H releases it", why, sep);
        else if (strncmp(reason, "destination_", 12) == 0 && *when)
                snprintf(buf, len, "%s%sdestination %s until %s", why, sep,
                         strcmp(reason, "destination_suspended") == 0 ? "suspended" : "backing off",
                         when);
        else if (*why)
                snprintf(buf, len, "%s", why);
        else if (strcmp(reason, "first_attempt") == 0)
                snprintf(buf, len, "not tried yet%s%s", *when ? ", first attempt at " : "", when);
        else
                snprintf(buf, len, "waiting%s%s (%s)", *when ? " until " : "", when, reason);
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

static json_t *iso_or_null(int64_t us)
{
        char buf[40];
        return us > 0 && *queue_iso_time(us, buf, sizeof(buf)) ? json_string(buf) : json_null();
}

/* When a waiting recipient is tried next: its retry time, or (not tried
 * yet) the time the daemon filled in; 0 when not known. */
static int64_t next_of(const struct envelope_rcpt *r, const char *queue_name)
{
        if (strcmp(queue_name, "hold") == 0)
                return 0;
        return r->state == RCPT_DEFERRED || r->state == RCPT_PENDING ? r->next_attempt_us : 0;
}

static json_t *rcpt_json(const struct envelope_rcpt *r, const char *queue_name)
{
        char why[9000];
        json_t *o = json_object();
        json_object_set_new(o, "address", json_string(r->address));
        if (*queue_delay_reason(r, why, sizeof(why)))
                json_object_set_new(o, "delay_reason", json_string(why));
        json_object_set_new(o, "class", r->reply_class ? json_string(r->reply_class) : json_null());
        int64_t next = next_of(r, queue_name);
        json_object_set_new(o, "next_attempt", time_or_null(next));
        json_object_set_new(o, "next_attempt_time", iso_or_null(next));
        json_object_set_new(o, "next_attempt_reason",
                            json_string(queue_wait_reason(r, queue_name)));
        json_object_set_new(o, "attempts", json_integer(r->attempts));
        return o;
}

/* The message-level tarry fields: the recipient due first sets class,
 * next_attempt and its reason (a recipient not tried yet counts when the
 * daemon filled in its time; else the first waiting one gives the reason). */
static void add_summary(json_t *o, const struct envelope *env, const char *queue_name)
{
        const struct envelope_rcpt *first = NULL, *any = NULL;
        int attempts = 0;
        for (size_t i = 0; i < env->n_rcpt; i++) {
                const struct envelope_rcpt *r = &env->rcpt[i];
                if (!queue_rcpt_waiting(r))
                        continue;
                if (!any)
                        any = r;
                if (r->attempts > attempts)
                        attempts = r->attempts;
                if (next_of(r, queue_name) > 0 &&
                    (!first || r->next_attempt_us < first->next_attempt_us))
                        first = r;
        }
        const struct envelope_rcpt *shown = first ? first : any;
        json_object_set_new(o, "class",
                            shown && shown->reply_class ? json_string(shown->reply_class)
                                                        : json_null());
        int64_t next = first ? first->next_attempt_us : 0;
        json_object_set_new(o, "next_attempt", time_or_null(next));
        json_object_set_new(o, "next_attempt_time", iso_or_null(next));
        json_object_set_new(o, "next_attempt_reason",
                            shown ? json_string(queue_wait_reason(shown, queue_name))
                                  : json_null());
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
                        json_array_append_new(rcpts, rcpt_json(&env->rcpt[i], queue_name));
        json_object_set_new(o, "recipients", rcpts);
        add_summary(o, env, queue_name);
        return o;
}
