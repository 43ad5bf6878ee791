/* queue/envelope.c — envelopes in memory and as JSON; see queue.h.
 *
 * The envelope file is a trust boundary: it is read back after crashes and
 * may have been edited by hand. envelope_from_json() therefore checks every
 * field against a table (type, length limit, syntax) and rejects anything it
 * does not know, with a static reason naming the field.
 */
#include "common/utf8.h"
#include "queue/queue.h"
#include "common/address.h"
#include "common/cleanup.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define RCPT_MAX       100000 /* recipients per message */
#define REPLY_MAX      8192   /* last reply text, multi-line joined */
#define REPLY_CODE_MAX 599    /* basic reply codes are 2xx..5xx */
#define ENVID_MAX      100    /* RFC 3461 section 4.4 */
#define ORCPT_MAX      500    /* RFC 3461 section 4.2: addr-type ";" xtext */
#define NAME_MAX_LEN   256    /* full name, user name */
#define SHORT_MAX      128    /* class, rule, dsn status, source address */
#define RELAY_MAX      300    /* "host[ip]:port" */
#define HEADERS_MAX    16384  /* header lines added at pickup */
#define TIME_MAX_US    (INT64_C(1) << 62)
#define ATTEMPTS_MAX   1000000

static const char *const state_names[] = {
    [RCPT_PENDING] = "pending",
    [RCPT_DEFERRED] = "deferred",
    [RCPT_DELIVERED] = "delivered",
    [RCPT_FAILED] = "failed",
};

static const char *const ret_names[] = {
    [DSN_RET_DEFAULT] = "default",
    [DSN_RET_HDRS] = "hdrs",
    [DSN_RET_FULL] = "full",
};

static const char *const dkim_names[] = {
    [ENVELOPE_DKIM_UNDECIDED] = "undecided",
    [ENVELOPE_DKIM_SIGNED] = "signed",
    [ENVELOPE_DKIM_UNSIGNED] = "unsigned",
};

/* NOTIFY bits and their names, in RFC 3461 order. */
static const struct {
        unsigned bit;
        const char *name;
} notify_names[] = {
    {NOTIFY_NEVER, "never"},
    {NOTIFY_SUCCESS, "success"},
    {NOTIFY_FAILURE, "failure"},
    {NOTIFY_DELAY, "delay"},
};

const char *rcpt_state_name(enum rcpt_state s)
{
        if ((unsigned)s >= ELEMENTSOF(state_names))
                return NULL;
        return state_names[s];
}

struct envelope *envelope_new(void)
{
        struct envelope *env = calloc(1, sizeof(*env));
        if (!env)
                return NULL;
        env->version = ENVELOPE_VERSION;
        env->uid = (uid_t)-1;
        env->sender = strdup("");
        if (!env->sender) {
                free(env);
                return NULL;
        }
        return env;
}

void envelope_rcpt_clear(struct envelope_rcpt *r)
{
        free(r->address);
        free(r->orcpt);
        free(r->dsn_status);
        free(r->last_reply);
        free(r->reply_class);
        free(r->rule);
        free(r->next_reason);
        free(r->relay);
}

void envelope_free(struct envelope *env)
{
        if (!env)
                return;
        for (size_t i = 0; i < env->n_rcpt; i++)
                envelope_rcpt_clear(&env->rcpt[i]);
        free(env->rcpt);
        free(env->sender);
        free(env->full_name);
        free(env->user);
        free(env->envid);
        free(env->source_address);
        free(env->headers);
        free(env);
}

struct envelope_rcpt *envelope_add_rcpt(struct envelope *env, const char *address)
{
        char *copy = strdup(address);
        if (!copy)
                return NULL;
        struct envelope_rcpt *v = realloc(env->rcpt, (env->n_rcpt + 1) * sizeof(*v));
        if (!v) {
                free(copy);
                return NULL;
        }
        env->rcpt = v;
        struct envelope_rcpt *r = &v[env->n_rcpt++];
        *r = (struct envelope_rcpt){.address = copy, .state = RCPT_PENDING};
        return r;
}

/* ---- serialising ---- */

static int set_str(json_t *o, const char *key, const char *s)
{
        if (!s)
                return 0;
        return json_object_set_new(o, key, json_string(s));
}

static bool status_ok(const char *s);

/* A free-text field (a server's reply, a full name) as the parser will take
 * it back: control characters (the newlines of a multi-line reply too)
 * become spaces, bytes that are not UTF-8 become U+FFFD, and the text is cut
 * at max bytes on a character boundary. Without this one Latin-1 byte in a
 * reply made the envelope unwritable, and a multi-line reply unreadable. */
static int set_text(json_t *o, const char *key, const char *s, size_t max)
{
        if (!s)
                return 0;
        size_t len = strlen(s), k = 0;
        _cleanup_free_ char *t = malloc(max + 1);
        if (!t)
                return -1;
        for (size_t i = 0; i < len;) {
                const unsigned char *c = (const unsigned char *)s + i;
                size_t n = *c < 0x80 ? 1 : utf8_seq_len(c, len - i);
                const char *out = n ? (const char *)c : "\xef\xbf\xbd";
                size_t olen = n ? n : 3;
                if (k + olen > max)
                        break;
                if (n == 1 && (*c < 0x20 || *c == 0x7f))
                        out = " ";
                memcpy(t + k, out, olen);
                k += olen;
                i += n ? n : 1;
        }
        return json_object_set_new(o, key, json_stringn(t, k));
}

static int set_int(json_t *o, const char *key, json_int_t v)
{
        return json_object_set_new(o, key, json_integer(v));
}

static json_t *notify_to_json(unsigned notify)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < ELEMENTSOF(notify_names); i++)
                if ((notify & notify_names[i].bit) &&
                    json_array_append_new(a, json_string(notify_names[i].name)) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

static json_t *rcpt_to_json(const struct envelope_rcpt *r)
{
        json_t *o = json_object();
        if (!o)
                return NULL;
        int e = 0;
        e |= set_str(o, "address", r->address);
        e |= set_str(o, "orcpt", r->orcpt);
        e |= json_object_set_new(o, "notify", notify_to_json(r->notify));
        e |= set_str(o, "state", rcpt_state_name(r->state));
        e |= set_int(o, "attempts", r->attempts);
        e |= set_int(o, "first_attempt_us", r->first_attempt_us);
        e |= set_int(o, "last_attempt_us", r->last_attempt_us);
        e |= set_int(o, "next_attempt_us", r->next_attempt_us);
        e |= set_int(o, "first_deferral_us", r->first_deferral_us);
        e |= set_int(o, "failed_retries", r->failed_retries);
        e |= set_str(o, "next_attempt_reason", r->next_reason);
        /* a server may answer "671 6.7.1": keep such codes in the reply text only */
        e |= set_int(o, "reply_code",
                     r->reply_code >= 0 && r->reply_code <= REPLY_CODE_MAX ? r->reply_code : 0);
        e |= set_str(o, "dsn_status",
                     r->dsn_status && status_ok(r->dsn_status) ? r->dsn_status : NULL);
        e |= set_text(o, "last_reply", r->last_reply, REPLY_MAX);
        e |= set_str(o, "class", r->reply_class);
        e |= set_text(o, "rule", r->rule, SHORT_MAX);
        e |= set_str(o, "relay", r->relay);
        e |= json_object_set_new(o, "failure_dsn_sent", json_boolean(r->failure_dsn_sent));
        if (r->relayed_dsn_owed) /* absent in the common case */
                e |= json_object_set_new(o, "relayed_dsn_owed", json_true());
        if (e) {
                json_decref(o);
                return NULL;
        }
        return o;
}

json_t *envelope_to_json(const struct envelope *env)
{
        _cleanup_(json_decrefp) json_t *o = json_object();
        json_t *rcpts = json_array();
        if (!o || !rcpts) {
                json_decref(rcpts);
                return NULL;
        }
        int e = 0;
        e |= set_int(o, "version", env->version);
        e |= set_str(o, "id", env->id);
        e |= set_str(o, "sender", env->sender ? env->sender : "");
        e |= set_text(o, "full_name", env->full_name, NAME_MAX_LEN);
        e |= set_int(o, "arrival_us", env->arrival_us);
        e |= set_int(o, "size", (json_int_t)env->size);
        e |= set_int(o, "uid", env->uid == (uid_t)-1 ? -1 : (json_int_t)env->uid);
        e |= set_text(o, "user", env->user, NAME_MAX_LEN);
        e |= set_str(o, "ret", ret_names[env->ret <= DSN_RET_FULL ? env->ret : 0]);
        e |= set_str(o, "envid", env->envid);
        e |= set_str(o, "source_address", env->source_address);
        e |= json_object_set_new(o, "delay_dsn_sent", json_boolean(env->delay_dsn_sent));
        e |= json_object_set_new(o, "is_dsn", json_boolean(env->is_dsn));
        if (env->postmaster_notice)
                e |= json_object_set_new(o, "postmaster_notice", json_true());
        e |= set_str(o, "headers", env->headers);
        if (env->dkim != ENVELOPE_DKIM_UNDECIDED && env->dkim <= ENVELOPE_DKIM_UNSIGNED)
                e |= set_str(o, "dkim", dkim_names[env->dkim]);
        for (size_t i = 0; !e && i < env->n_rcpt; i++)
                e |= json_array_append_new(rcpts, rcpt_to_json(&env->rcpt[i]));
        e |= json_object_set_new(o, "recipients", rcpts); /* last: easier to read by eye */
        if (e)
                return NULL;
        return TAKE_PTR(o);
}

/* ---- parsing ---- */

/* What a string field may contain. */
enum syntax {
        SYN_TEXT,    /* printable, no CR/LF/NUL/controls (UTF-8 allowed) */
        SYN_ADDRESS, /* passes addr_check() */
        SYN_SENDER,  /* "" or passes addr_check() */
        SYN_ID,      /* a queue ID */
        SYN_STATUS,  /* enhanced status code "4.7.1" */
        SYN_ASCII,   /* printable US-ASCII without spaces (xtext, ORCPT, relay) */
        SYN_HEADERS, /* header lines ending in CRLF, continuations start with SP/HT */
};

enum ftype {
        F_STR,    /* char *, NULL when absent */
        F_I64,    /* int64_t, 0 ... TIME_MAX_US */
        F_INT,    /* int, 0 ... max */
        F_BOOL,   /* bool */
        F_UINT64, /* uint64_t, 0 ... ENVELOPE_MAX_BYTES * ... (any non-negative) */
};

struct field {
        const char *key;
        enum ftype type;
        size_t offset;
        bool required;
        enum syntax syntax; /* F_STR */
        long long max;      /* F_STR: length; F_INT/F_I64/F_UINT64: value */
        const char *why;    /* the reason given when this field is wrong */
};

#define E(f) offsetof(struct envelope, f)
#define R(f) offsetof(struct envelope_rcpt, f)

/* Top-level envelope fields other than version, ret, uid and recipients (handled apart). */
static const struct field env_fields[] = {
    {"id", F_STR, E(id), true, SYN_ID, QUEUE_ID_LEN, "'id' is not a queue ID"},
    {"sender", F_STR, E(sender), true, SYN_SENDER, ADDR_MAX,
     "'sender' is not \"\" or a valid address"},
    {"full_name", F_STR, E(full_name), false, SYN_TEXT, NAME_MAX_LEN,
     "'full_name' is not printable text of at most 256 bytes"},
    {"arrival_us", F_I64, E(arrival_us), true, 0, TIME_MAX_US,
     "'arrival_us' is not a time in microseconds"},
    {"size", F_UINT64, E(size), true, 0, INT64_MAX, "'size' is not a byte count"},
    {"user", F_STR, E(user), false, SYN_TEXT, NAME_MAX_LEN,
     "'user' is not printable text of at most 256 bytes"},
    {"envid", F_STR, E(envid), false, SYN_ASCII, ENVID_MAX,
     "'envid' is not printable ASCII of at most 100 characters"},
    {"source_address", F_STR, E(source_address), false, SYN_ASCII, SHORT_MAX,
     "'source_address' is not an address of at most 128 characters"},
    {"delay_dsn_sent", F_BOOL, E(delay_dsn_sent), false, 0, 0, "'delay_dsn_sent' is not a boolean"},
    {"is_dsn", F_BOOL, E(is_dsn), false, 0, 0, "'is_dsn' is not a boolean"},
    {"postmaster_notice", F_BOOL, E(postmaster_notice), false, 0, 0,
     "'postmaster_notice' is not a boolean"},
    {"headers", F_STR, E(headers), false, SYN_HEADERS, HEADERS_MAX,
     "'headers' is not header lines (name: value, CRLF) of at most 16384 bytes"},
};

/* Recipient fields other than state and notify (handled apart). */
static const struct field rcpt_fields[] = {
    {"address", F_STR, R(address), true, SYN_ADDRESS, ADDR_MAX,
     "a recipient 'address' is missing or not a valid address"},
    {"orcpt", F_STR, R(orcpt), false, SYN_ASCII, ORCPT_MAX,
     "a recipient 'orcpt' is not printable ASCII of at most 500 characters"},
    {"attempts", F_INT, R(attempts), false, 0, ATTEMPTS_MAX,
     "a recipient 'attempts' is not a count"},
    {"first_attempt_us", F_I64, R(first_attempt_us), false, 0, TIME_MAX_US,
     "a recipient 'first_attempt_us' is not a time in microseconds"},
    {"last_attempt_us", F_I64, R(last_attempt_us), false, 0, TIME_MAX_US,
     "a recipient 'last_attempt_us' is not a time in microseconds"},
    {"next_attempt_us", F_I64, R(next_attempt_us), false, 0, TIME_MAX_US,
     "a recipient 'next_attempt_us' is not a time in microseconds"},
    {"first_deferral_us", F_I64, R(first_deferral_us), false, 0, TIME_MAX_US,
     "a recipient 'first_deferral_us' is not a time in microseconds"},
    {"failed_retries", F_INT, R(failed_retries), false, 0, ATTEMPTS_MAX,
     "a recipient 'failed_retries' is not a count"},
    {"next_attempt_reason", F_STR, R(next_reason), false, SYN_ASCII, SHORT_MAX,
     "a recipient 'next_attempt_reason' is not a name of at most 128 characters"},
    {"reply_code", F_INT, R(reply_code), false, 0, REPLY_CODE_MAX,
     "a recipient 'reply_code' is not 0..599"},
    {"dsn_status", F_STR, R(dsn_status), false, SYN_STATUS, 11,
     "a recipient 'dsn_status' is not an enhanced status code like 4.7.1"},
    {"last_reply", F_STR, R(last_reply), false, SYN_TEXT, REPLY_MAX,
     "a recipient 'last_reply' is not printable text of at most 8192 bytes"},
    {"class", F_STR, R(reply_class), false, SYN_ASCII, SHORT_MAX,
     "a recipient 'class' is not a name of at most 128 characters"},
    {"rule", F_STR, R(rule), false, SYN_TEXT, SHORT_MAX,
     "a recipient 'rule' is not printable text of at most 128 bytes"},
    {"relay", F_STR, R(relay), false, SYN_ASCII, RELAY_MAX,
     "a recipient 'relay' is not printable ASCII of at most 300 characters"},
    {"failure_dsn_sent", F_BOOL, R(failure_dsn_sent), false, 0, 0,
     "a recipient 'failure_dsn_sent' is not a boolean"},
    {"relayed_dsn_owed", F_BOOL, R(relayed_dsn_owed), false, 0, 0,
     "a recipient 'relayed_dsn_owed' is not a boolean"},
};

static bool text_ok(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c < 0x20 || c == 0x7f)
                        return false;
        }
        return true;
}

/* "Name: value\r\n", continuation lines starting with a space or a tab;
 * no other control characters, no bare CR or LF: these bytes go on the wire
 * ahead of the body. */
static bool headers_ok(const char *s, size_t len)
{
        bool line_start = true;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                if (line_start) {
                        bool cont = c == ' ' || c == '\t';
                        size_t n = strcspn(s + i, ":\r\n \t");
                        if (!cont && (n == 0 || s[i + n] != ':'))
                                return false;
                        line_start = false;
                }
                if (c == '\r') {
                        if (i + 1 >= len || s[i + 1] != '\n')
                                return false;
                        i++;
                        line_start = true;
                } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
                        return false;
                }
        }
        return line_start;
}

static bool ascii_ok(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (s[i] <= 0x20 || s[i] >= 0x7f)
                        return false;
        return true;
}

/* "4.7.1": class digit, subject 1-3 digits, detail 1-3 digits. */
static bool status_ok(const char *s)
{
        if (!(s[0] == '2' || s[0] == '4' || s[0] == '5') || s[1] != '.')
                return false;
        s += 2;
        for (int part = 0; part < 2; part++) {
                size_t n = strspn(s, "0123456789");
                if (n < 1 || n > 3)
                        return false;
                s += n;
                if (part == 0 && *s++ != '.')
                        return false;
        }
        return *s == '\0';
}

static bool syntax_ok(enum syntax syn, const char *s, size_t len)
{
        switch (syn) {
        case SYN_TEXT:
                return text_ok(s, len);
        case SYN_ADDRESS:
                return addr_check(s, NULL) == 0;
        case SYN_SENDER:
                return len == 0 || addr_check(s, NULL) == 0;
        case SYN_ID:
                return queue_id_valid(s);
        case SYN_STATUS:
                return status_ok(s);
        case SYN_ASCII:
                return ascii_ok(s, len);
        case SYN_HEADERS:
                return headers_ok(s, len);
        }
        return false;
}

/* Store one JSON value into the struct at base according to f. */
static int take_field(const struct field *f, json_t *v, void *base)
{
        void *p = (char *)base + f->offset;
        switch (f->type) {
        case F_STR: {
                if (!json_is_string(v))
                        return -EBADMSG;
                const char *s = json_string_value(v);
                size_t len = json_string_length(v);
                if (len > (size_t)f->max || strlen(s) != len || !syntax_ok(f->syntax, s, len))
                        return -EBADMSG;
                if (f->syntax == SYN_ID) { /* a fixed array in struct envelope */
                        memcpy(p, s, len + 1);
                        return 0;
                }
                char *copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
                free(*(char **)p);
                *(char **)p = copy;
                return 0;
        }
        case F_BOOL:
                if (!json_is_boolean(v))
                        return -EBADMSG;
                *(bool *)p = json_is_true(v);
                return 0;
        default:
                break;
        }
        if (!json_is_integer(v))
                return -EBADMSG;
        json_int_t n = json_integer_value(v);
        if (n < 0 || n > f->max)
                return -EBADMSG;
        if (f->type == F_INT)
                *(int *)p = (int)n;
        else if (f->type == F_I64)
                *(int64_t *)p = (int64_t)n;
        else
                *(uint64_t *)p = (uint64_t)n;
        return 0;
}

static const struct field *find_field(const struct field *t, size_t n, const char *key)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(t[i].key, key) == 0)
                        return &t[i];
        return NULL;
}

/* Every key of o must be in t or in extra; every required key of t must be present. */
static int take_fields(json_t *o, const struct field *t, size_t n, const char *const *extra,
                       void *base, const char **why, const char *unknown_why)
{
        const char *key;
        json_t *v;
        json_object_foreach (o, key, v) {
                const struct field *f = find_field(t, n, key);
                if (!f) {
                        bool known = false;
                        for (size_t i = 0; extra[i]; i++)
                                known |= strcmp(extra[i], key) == 0;
                        if (!known)
                                return *why = unknown_why, -EBADMSG;
                        continue;
                }
                int r = take_field(f, v, base);
                if (r < 0) {
                        *why = r == -ENOMEM ? "out of memory" : f->why;
                        return r;
                }
        }
        for (size_t i = 0; i < n; i++)
                if (t[i].required && !json_object_get(o, t[i].key))
                        return *why = t[i].why, -EBADMSG;
        return 0;
}

static int take_notify(json_t *v, unsigned *out)
{
        if (!v)
                return 0;
        if (!json_is_array(v) || json_array_size(v) > ELEMENTSOF(notify_names))
                return -EBADMSG;
        size_t i;
        json_t *e;
        unsigned bits = 0;
        json_array_foreach (v, i, e) {
                const char *s = json_string_value(e);
                size_t k = 0;
                while (s && k < ELEMENTSOF(notify_names) && strcmp(s, notify_names[k].name) != 0)
                        k++;
                if (!s || k == ELEMENTSOF(notify_names) || (bits & notify_names[k].bit))
                        return -EBADMSG;
                bits |= notify_names[k].bit;
        }
        if ((bits & NOTIFY_NEVER) && bits != NOTIFY_NEVER)
                return -EBADMSG;
        *out = bits;
        return 0;
}

/* The index of s in names[], or -1. */
static int name_index(const char *const *names, size_t n, json_t *v)
{
        const char *s = json_string_value(v);
        for (size_t i = 0; s && i < n; i++)
                if (strcmp(s, names[i]) == 0)
                        return (int)i;
        return -1;
}

static int take_rcpt(json_t *o, struct envelope_rcpt *r, const char **why)
{
        static const char *const extra[] = {"state", "notify", NULL};
        if (!json_is_object(o))
                return *why = "a recipient is not a JSON object", -EBADMSG;
        int r0 = take_fields(o, rcpt_fields, ELEMENTSOF(rcpt_fields), extra, r, why,
                             "a recipient has an unknown key");
        if (r0 < 0)
                return r0;
        int st = name_index(state_names, ELEMENTSOF(state_names), json_object_get(o, "state"));
        if (st < 0)
                return *why = "a recipient 'state' is not pending/deferred/delivered/failed",
                       -EBADMSG;
        r->state = (enum rcpt_state)st;
        if (take_notify(json_object_get(o, "notify"), &r->notify) < 0)
                return *why = "a recipient 'notify' is not a list of never or "
                              "success/failure/delay",
                       -EBADMSG;
        return 0;
}

static int take_rcpts(json_t *a, struct envelope *env, const char **why)
{
        if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > RCPT_MAX)
                return *why = "'recipients' is not a list of 1 to 100000 recipients", -EBADMSG;
        env->rcpt = calloc(json_array_size(a), sizeof(*env->rcpt));
        if (!env->rcpt)
                return *why = "out of memory", -ENOMEM;
        size_t i;
        json_t *o;
        json_array_foreach (a, i, o) {
                env->n_rcpt = i + 1;
                int r = take_rcpt(o, &env->rcpt[i], why);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* version, ret, uid, dkim: the fields with their own rules. */
static int take_specials(json_t *o, struct envelope *env, const char **why)
{
        json_t *v = json_object_get(o, "version");
        if (!json_is_integer(v) || json_integer_value(v) != ENVELOPE_VERSION)
                return *why = "'version' is missing or not 1", -EBADMSG;
        env->version = ENVELOPE_VERSION;

        v = json_object_get(o, "ret");
        int ret = v ? name_index(ret_names, ELEMENTSOF(ret_names), v) : DSN_RET_DEFAULT;
        if (ret < 0)
                return *why = "'ret' is not default/hdrs/full", -EBADMSG;
        env->ret = (enum dsn_ret)ret;

        v = json_object_get(o, "dkim");
        int dkim = v ? name_index(dkim_names, ELEMENTSOF(dkim_names), v) : ENVELOPE_DKIM_UNDECIDED;
        if (dkim < 0)
                return *why = "'dkim' is not undecided/signed/unsigned", -EBADMSG;
        env->dkim = (enum envelope_dkim)dkim;

        v = json_object_get(o, "uid");
        if (v) {
                json_int_t uid = json_is_integer(v) ? json_integer_value(v) : -2;
                if (uid < -1 || uid >= (json_int_t)UINT32_MAX)
                        return *why = "'uid' is not a user ID", -EBADMSG;
                env->uid = uid == -1 ? (uid_t)-1 : (uid_t)uid;
        }
        return 0;
}

static int envelope_from_object(json_t *o, struct envelope *env, const char **why)
{
        static const char *const extra[] = {"version", "ret", "uid", "dkim", "recipients", NULL};
        if (!json_is_object(o))
                return *why = "the envelope is not a JSON object", -EBADMSG;
        int r = take_specials(o, env, why);
        if (r < 0)
                return r;
        r = take_fields(o, env_fields, ELEMENTSOF(env_fields), extra, env, why,
                        "the envelope has an unknown key");
        if (r < 0)
                return r;
        return take_rcpts(json_object_get(o, "recipients"), env, why);
}

int envelope_from_json(const char *text, size_t len, struct envelope **out, const char **why)
{
        const char *dummy;
        if (!why)
                why = &dummy;
        if (len > ENVELOPE_MAX_BYTES)
                return *why = "the envelope file is larger than 16 MiB", -EBADMSG;
        json_error_t jerr;
        _cleanup_(json_decrefp) json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!o)
                return *why = "the envelope is not valid JSON (truncated or edited?)", -EBADMSG;
        struct envelope *env = envelope_new();
        if (!env)
                return *why = "out of memory", -ENOMEM;
        int r = envelope_from_object(o, env, why);
        if (r < 0) {
                envelope_free(env);
                return r;
        }
        *out = env;
        return 0;
}
