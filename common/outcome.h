/* common/outcome.h — where a delivery outcome came from, as typed values.
 *
 * Shared vocabulary between smtpc/ (which knows what happened), the worker
 * socket (smtpc/ipc.c carries the names), scheduler/ (whose classifier
 * decides a failure of tarry's own from its reason, never from its words)
 * and daemon/deliver.c (log lines, "host … said" only for a server's reply).
 *
 * A reply is either the server's (OUTCOME_FROM_SERVER: its code, enhanced
 * code and text as sent) or tarry's own (OUTCOME_FROM_TARRY: a reason from
 * enum outcome_local, with a code and text synthesized for logs and DSNs).
 * The phase says how far the session got.
 */
#ifndef TARRY_COMMON_OUTCOME_H
#define TARRY_COMMON_OUTCOME_H

enum outcome_origin {
        OUTCOME_FROM_SERVER, /* the receiver's reply */
        OUTCOME_FROM_TARRY,  /* tarry's own failure: see enum outcome_local */
        OUTCOME__ORIGIN_MAX,
};

/* Why tarry itself failed an attempt or a recipient (origin FROM_TARRY). */
enum outcome_local {
        OUTCOME_LOCAL_NONE,     /* the server's reply (origin FROM_SERVER) */
        OUTCOME_LOCAL_DNS,      /* next hop or MX lookup failed (4.4.3), no such domain (5.4.4),
                                 * null MX (5.1.10) */
        OUTCOME_LOCAL_CONNECT,  /* every host refused or unreachable, source not bindable (4.4.1) */
        OUTCOME_LOCAL_TIMEOUT,  /* connect, command or DATA timeout (4.4.2) */
        OUTCOME_LOCAL_DROPPED,  /* the connection was lost mid-session (4.4.2) */
        OUTCOME_LOCAL_TLS,      /* STARTTLS required or verified, and it failed (4.7.5) */
        OUTCOME_LOCAL_POLICY,   /* MTA-STS enforce left no usable MX host (4.7.5) */
        OUTCOME_LOCAL_PROTOCOL, /* the server broke the protocol: garbled or endless reply */
        OUTCOME_LOCAL_REFUSAL,  /* tarry would not send it there: 8-bit to a 7-bit server,
                                 * UTF-8 address without SMTPUTF8 (5.6.x) */
        OUTCOME_LOCAL_RESOURCE, /* a local problem: memory, body unreadable, auth file (4.3.0) */
        OUTCOME_LOCAL_WORKER,   /* the delivery worker died, lied, overstayed or would not start */
        OUTCOME_LOCAL_SHUTDOWN, /* aborted because tarryd is stopping */
        OUTCOME__LOCAL_MAX,
};

/* How far the session got when the reply came (or the failure happened). */
enum outcome_phase {
        OUTCOME_PHASE_NONE,     /* nothing happened yet (shutdown, worker start) */
        OUTCOME_PHASE_ROUTE,    /* routing, DNS, MTA-STS: before any connection */
        OUTCOME_PHASE_CONNECT,  /* TCP connect */
        OUTCOME_PHASE_GREETING, /* the server's 220 */
        OUTCOME_PHASE_EHLO,
        OUTCOME_PHASE_STARTTLS,
        OUTCOME_PHASE_AUTH,
        OUTCOME_PHASE_MAIL,
        OUTCOME_PHASE_RCPT,
        OUTCOME_PHASE_DATA,
        OUTCOME_PHASE_DOT, /* the reply to the final "." */
        OUTCOME__PHASE_MAX,
};

/* Names as they travel on the worker socket and appear in logs and tests:
 * "server"/"tarry"; "none", "dns", "connect", …; "none", "route", "connect",
 * "greeting", "ehlo", … ; NULL for out-of-range values. */
const char *outcome_origin_name(enum outcome_origin o);
const char *outcome_local_name(enum outcome_local l);
const char *outcome_phase_name(enum outcome_phase p);

/* The reverse: the value named s, or -EINVAL (unknown name or NULL). */
int outcome_origin_from_name(const char *s);
int outcome_local_from_name(const char *s);
int outcome_phase_from_name(const char *s);

#endif
