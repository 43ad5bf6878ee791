/* smtpc/esmtp.h — what a server's EHLO offers, and the MAIL/RCPT commands
 * tarry builds from it (private to smtpc/).
 *
 * Input: the EHLO reply text exactly as received (code prefix on every line,
 * lines joined with '\n'); addresses that already passed addr_check().
 * Output: a keyword set, and command lines ending in CRLF. ENVID and ORCPT
 * arrive xtext-encoded as the envelope keeps them (RFC 3461 section 4;
 * sendmail encodes -V, -bs checks what the client sent) and are checked
 * again here: a value that is not valid xtext is refused (-EINVAL), never
 * sent, so nothing a sender wrote can end or extend a command.
 */
#ifndef TARRY_SMTPC_ESMTP_H
#define TARRY_SMTPC_ESMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum esmtp_ext {
        ESMTP_PIPELINING = 1u << 0, /* RFC 2920 */
        ESMTP_8BITMIME = 1u << 1,   /* RFC 6152 */
        ESMTP_SMTPUTF8 = 1u << 2,   /* RFC 6531 */
        ESMTP_DSN = 1u << 3,        /* RFC 3461 */
        ESMTP_SIZE = 1u << 4,       /* RFC 1870 */
};

struct esmtp_caps {
        unsigned ext;      /* enum esmtp_ext bits */
        uint64_t size_max; /* SIZE's argument, 0: none given */
};

/* Keywords of a 250 EHLO reply (case-insensitive; the first line is the
 * server's name, not a keyword). Unknown keywords are ignored. */
void esmtp_parse_ehlo(const char *text, struct esmtp_caps *out);

/* Whether s (at most max bytes) is RFC 3461 xtext: bytes 33..126 except '='
 * and '+', and "+XX" with two upper-case hex digits. */
bool esmtp_xtext_ok(const char *s, size_t max);

/* What the MAIL command carries besides the sender. */
struct esmtp_mail {
        uint64_t size;     /* SIZE= when offered (0: not sent) */
        bool eight_bit;    /* BODY=8BITMIME when offered */
        bool smtputf8;     /* SMTPUTF8 when offered and needed */
        int ret;           /* RET=: 0 none, 1 FULL, 2 HDRS (with DSN) */
        const char *envid; /* ENVID= (with DSN), xtext, NULL: none */
};

/* RCPT parameters. */
struct esmtp_rcpt {
        unsigned notify;   /* 0: none; else bits 1 SUCCESS, 2 FAILURE, 4 DELAY, 8 NEVER */
        const char *orcpt; /* "rfc822;xtext" (addr-type;xtext) or NULL */
};

#define ESMTP_NOTIFY_SUCCESS 1u
#define ESMTP_NOTIFY_FAILURE 2u
#define ESMTP_NOTIFY_DELAY   4u
#define ESMTP_NOTIFY_NEVER   8u

/* "MAIL FROM:<sender> [params]\r\n" into out. 0, -ENOSPC, or -EINVAL when
 * a DSN value cannot be sent (an ENVID or ORCPT that is not xtext, an
 * ORCPT without "type;"). */
int esmtp_mail_cmd(char *out, size_t size, const char *sender, const struct esmtp_mail *m,
                   const struct esmtp_caps *caps);
int esmtp_rcpt_cmd(char *out, size_t size, const char *rcpt, const struct esmtp_rcpt *p,
                   const struct esmtp_caps *caps);

/* Whether s holds a byte >= 0x80. */
bool esmtp_has_8bit(const char *s);

/* The A-label form of a domain (IDNA2008, libidn2: "bücher.example" →
 * "xn--bcher-kva.example"); an ASCII domain is copied as it is. 0, -EINVAL
 * (not a valid IDN), -ENOSPC. */
int esmtp_alabel(const char *domain, char *out, size_t size);

/* addr for a server without SMTPUTF8 (RFC 6531 3.2): its domain as an
 * A-label. -EILSEQ when the local part is not ASCII (no ASCII form exists:
 * 5.6.7), -EINVAL for a domain that is not a valid IDN. */
int esmtp_ascii_address(const char *addr, char *out, size_t size);

#endif
