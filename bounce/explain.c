/* bounce/explain.c — status codes and plain words per outcome; see explain.h. */
#include "bounce/explain.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/reply_class.h"

/* Per deferral class: the fallback status when the server sent no usable
 * enhanced code, and the words a sender reads while we keep retrying. */
static const struct class_row {
        const char *status;
        struct explanation words;
} class_rows[CLASS__MAX] = {
    /* greylisters usually answer 451 4.7.1: "not authorised yet" */
    [CLASS_GREYLIST] = {"4.7.1",
                        {"The receiving server asked us to wait and try again later "
                         "(greylisting, a common anti-spam measure).",
                         "Nothing to do: we will try again as soon as the waiting time is "
                         "over."}},
    /* reputation blocks are policy refusals of the sending address */
    [CLASS_REPUTATION] = {"4.7.1",
                          {"The receiving server is limiting mail from our sending address "
                           "because of that address's reputation.",
                           "Nothing to do for now: we retry slowly. If this goes on, ask the "
                           "administrator of this mail system to check the sending address's "
                           "reputation."}},
    /* rate limits: "other security or policy status" is the closest code */
    [CLASS_RATE_LIMIT] = {"4.7.0",
                          {"The receiving server is limiting how much mail it accepts from "
                           "us at a time (rate limit).",
                           "Nothing to do: we send more slowly and keep trying."}},
    /* overload: X.4.5 mail system congestion */
    [CLASS_OVERLOAD] = {"4.4.5",
                        {"The receiving server is overloaded or temporarily unavailable.",
                         "Nothing to do: we will keep trying."}},
    /* full mailbox: X.2.2 mailbox full */
    [CLASS_MAILBOX_FULL] = {"4.2.2",
                            {"The recipient's mailbox is full.",
                             "We keep trying in case the recipient frees some space; you may "
                             "want to reach them another way."}},
    /* routing: no answer from the host (DNS or connection problem) */
    [CLASS_ROUTING] = {"4.4.1",
                       {"We could not reach the recipient's mail server (a DNS or "
                        "connection problem).",
                        "Check that the domain of the address is spelled right; if it is, "
                        "nothing to do: we keep trying."}},
    /* local policy of the receiver */
    [CLASS_POLICY] = {"4.7.0",
                      {"The receiving server refused the message for now because of its "
                       "local policy.",
                       "If this goes on, contact the recipient by other means."}},
    /* unspecified temporary failure */
    [CLASS_UNKNOWN_TEMP] = {"4.0.0",
                            {"The receiving server reported a temporary problem.",
                             "Nothing to do: we will keep trying."}},
    /* a 5xx that somehow ended in a delay report */
    [CLASS_PERMANENT] = {"5.0.0",
                         {"The receiving server rejected the message.",
                          "Check the address and the server's reply below."}},
};

/* Permanent failures, matched on the Status: prefix, most specific first. */
static const struct perm_row {
        const char *prefix;
        struct explanation words;
} perm_rows[] = {
    /* X.1.1 bad destination mailbox address */
    {"5.1.1",
     {"The receiving server says this address does not exist (unknown user).",
      "Check the address for typing mistakes; sending to it again unchanged will fail the "
      "same way."}},
    /* X.1.2 bad destination system address */
    {"5.1.2",
     {"The recipient's domain does not exist or does not accept mail.",
      "Check the part of the address after the @."}},
    /* X.2.1 mailbox disabled */
    {"5.2.1",
     {"The recipient's mailbox is disabled and no longer accepts mail.",
      "Reach the recipient another way."}},
    /* X.2.2 mailbox full, refused for good by the receiver */
    {"5.2.2",
     {"The recipient's mailbox is full and the server refused to keep the message.",
      "Reach the recipient another way, or send again once they have freed space."}},
    /* X.2.3 / X.3.4 message too big */
    {"5.2.3",
     {"The message is larger than the receiving server accepts.",
      "Send a smaller message (for example a link instead of a large attachment)."}},
    {"5.3.4",
     {"The message is larger than the receiving server accepts.",
      "Send a smaller message (for example a link instead of a large attachment)."}},
    /* X.4.6 routing loop: too many Received: headers, or mail handed back */
    {"5.4.6",
     {"The message was passed between mail systems too many times (a mail loop), so we "
      "stopped it.",
      "Ask the administrator of this mail system to check where mail for this address is "
      "forwarded."}},
    /* X.7.x security or policy: spam filters, authentication, blocklists */
    {"5.7.",
     {"The receiving server refused the message for policy reasons (for example spam "
      "filtering, or our sending server not being accepted).",
      "Contact the recipient by other means; the server's reply below may say more."}},
    /* anything else permanent */
    {"5.",
     {"The receiving server rejected the message permanently.",
      "Read the server's reply below; sending the same message again will fail the same "
      "way."}},
};

static const struct explanation expired_words = {
    "We gave up: the message could not be delivered before its time in the queue ran out.",
    "Check the address; if it is right, send the message again later or reach the "
    "recipient another way.",
};

static bool digits(const char **p, int max)
{
        int n = 0;
        while (n < max && isdigit((unsigned char)**p))
                (*p)++, n++;
        return n > 0 && !isdigit((unsigned char)**p);
}

bool explain_status_valid(const char *s)
{
        if (!s || !strchr("245", s[0]) || s[0] == '\0' || s[1] != '.')
                return false;
        s += 2;
        if (!digits(&s, 3) || *s++ != '.')
                return false;
        return digits(&s, 3) && *s == '\0';
}

enum reply_class explain_class(const struct envelope_rcpt *r)
{
        int c = r->reply_class ? reply_class_from_name(r->reply_class) : -1;
        if (c >= 0)
                return (enum reply_class)c;
        if (r->reply_code >= 500)
                return CLASS_PERMANENT;
        return r->reply_code >= 400 ? CLASS_UNKNOWN_TEMP : CLASS_ROUTING;
}

void explain_status(const struct envelope_rcpt *r, enum dsn_kind kind, char out[DSN_STATUS_MAX])
{
        char want = kind == DSN_DELAYED ? '4' : '5';
        if (kind == DSN_FAILED && dsn_rcpt_expired(r))
                snprintf(out, DSN_STATUS_MAX, "4.4.7"); /* as Postfix: delivery time expired */
        else if (explain_status_valid(r->dsn_status) && r->dsn_status[0] == want)
                snprintf(out, DSN_STATUS_MAX, "%s", r->dsn_status);
        else if (kind == DSN_FAILED)
                snprintf(out, DSN_STATUS_MAX, "5.0.0");
        else
                snprintf(out, DSN_STATUS_MAX, "%s", class_rows[explain_class(r)].status);
}

static struct explanation permanent_words(const struct envelope_rcpt *r)
{
        char status[DSN_STATUS_MAX];
        explain_status(r, DSN_FAILED, status);
        if (strcmp(status, "5.0.0") == 0 && explain_class(r) == CLASS_MAILBOX_FULL)
                snprintf(status, sizeof status, "5.2.2");
        for (size_t i = 0; i < ELEMENTSOF(perm_rows); i++)
                if (strncmp(status, perm_rows[i].prefix, strlen(perm_rows[i].prefix)) == 0)
                        return perm_rows[i].words;
        return perm_rows[ELEMENTSOF(perm_rows) - 1].words;
}

struct explanation explain_rcpt(const struct envelope_rcpt *r, enum dsn_kind kind)
{
        if (kind == DSN_DELAYED)
                return class_rows[explain_class(r)].words;
        if (dsn_rcpt_expired(r))
                return expired_words;
        return permanent_words(r);
}
