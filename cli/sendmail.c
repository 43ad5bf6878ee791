/* cli/sendmail.c — the sendmail command (and mailq): submission into the spool.
 *
 * Options are those of Postfix's sendmail(1), accepted or refused as it does;
 * the ones tarry has no use for are accepted and ignored. Exit codes are
 * sysexits(3): 0 only once the message is durable in incoming/; 64 bad
 * usage (unknown option, bad command-line address); 65 bad input (bad
 * address in a -t header, message over message_size_limit, unreadable
 * input); 67 no user name; 72 mailq cannot find tarryq; 75 the spool
 * cannot take the message now (full disk, quota, file size limit, missing
 * spool); 78 configuration errors.
 * Whatever fails, the draft is aborted: nothing is left half-queued.
 *
 * Installed set-group-ID tarrydrop, for a user who cannot write the spool:
 * -C and $TARRY_CONFIG are refused (77) unless the user is root; the
 * message goes into the spool's maildrop/ (queue_open_maildrop), and the
 * group is given up for good right after the drop file is created, before
 * stdin is read. -f by a user that allow_sender_override does not list: 77.
 *
 * mailq and -bp run `tarryq -p` (found next to this binary, else in
 * TARRY_BINDIR), with the group already given up: the listing and its HTTP
 * client (libcurl) are tarryq's, so a submission maps none of it.
 */
#include "cli/cli_util.h"
#include "cli/headers.h"
#include "cli/linereader.h"
#include "cli/smtp_server.h"
#include "cli/submit.h"
#include "common/cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <grp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <limits.h>
#include <fcntl.h>
#include <unistd.h>

#define FULL_NAME_MAX 256
#define ENVID_MAX     100

enum mode {
        MODE_ENQUEUE, /* -bm, the default */
        MODE_MAILQ,   /* -bp, or run as mailq */
        MODE_SMTP,    /* -bs */
        MODE_IGNORE,  /* -bh, -bH: nothing to do */
};

struct options {
        enum mode mode;
        bool extract;  /* -t */
        bool dot_ends; /* a "." line ends the input, unless -i / -oi */
        int verbose;
        bool queue_run; /* -q<interval>: a no-op outside daemon mode */
        const char *config;
        const char *sender;    /* -f / -r */
        const char *full_name; /* -F */
        unsigned notify;       /* -N */
        enum dsn_ret ret;      /* -R */
        const char *envid;     /* -V */
};

static const char *prog = "sendmail";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: ", prog);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EX_USAGE;
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void warn(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: warning: ", prog);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* -N: "never", or a list of success, delay, failure (comma or space separated). 0: bad. */
static unsigned parse_notify(const char *s)
{
        static const struct {
                const char *name;
                unsigned bit;
        } names[] = {{"never", NOTIFY_NEVER},
                     {"success", NOTIFY_SUCCESS},
                     {"failure", NOTIFY_FAILURE},
                     {"delay", NOTIFY_DELAY}};
        unsigned bits = 0;
        while (*s) {
                s += strspn(s, ", \t");
                size_t n = strcspn(s, ", \t");
                if (n == 0)
                        break;
                unsigned bit = 0;
                for (size_t i = 0; i < ELEMENTSOF(names); i++)
                        if (strlen(names[i].name) == n && strncasecmp(s, names[i].name, n) == 0)
                                bit = names[i].bit;
                if (!bit)
                        return 0;
                bits |= bit;
                s += n;
        }
        if ((bits & NOTIFY_NEVER) && bits != NOTIFY_NEVER)
                return 0;
        return bits;
}

static bool all_print(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
                        return false;
        return true;
}

static int opt_b(struct options *o, const char *arg)
{
        switch (arg[0]) {
        case 'm':
                o->mode = MODE_ENQUEUE;
                return 0;
        case 'p':
                o->mode = MODE_MAILQ;
                return 0;
        case 's':
                o->mode = MODE_SMTP;
                return 0;
        case 'h':
        case 'H':
                o->mode = MODE_IGNORE;
                return 0;
        case 'd':
        case 'l':
                return usage_error("-b%c: tarry's daemon is tarryd, not sendmail", arg[0]);
        case 'i':
                return usage_error("-bi: tarry has no alias database");
        case 'v':
                return usage_error("-bv: address verification is not supported");
        default:
                return usage_error("unsupported: -b%c", arg[0] ? arg[0] : ' ');
        }
}

static int opt_o(struct options *o, const char *arg)
{
        switch (arg[0]) {
        case 'A':
                if (!arg[1])
                        return usage_error("-oA requires pathname");
                return 0; /* no aliases here */
        case 'i':
                o->dot_ends = false;
                return 0;
        default: /* -odb -odi -odq -oem -oee -om -o7 -o8 …: Postfix ignores them too */
                return 0;
        }
}

static int opt_q(struct options *o, const char *arg)
{
        if (isdigit((unsigned char)arg[0])) {
                o->queue_run = true;
                return 0;
        }
        if (arg[0] == 'R' || arg[0] == 'I')
                return usage_error("-q%c: use 'tarryq -f' or 'tarryq -i ID' instead", arg[0]);
        return usage_error("-q%c: unknown queue option; use 'tarryq -f' to flush",
                           arg[0] ? arg[0] : ' ');
}

static int opt_value(struct options *o, int c, const char *arg)
{
        switch (c) {
        case 'B':
                if (strcmp(arg, "8BITMIME") != 0 && strcmp(arg, "7BIT") != 0)
                        return usage_error("-B option needs 8BITMIME or 7BIT");
                return 0;
        case 'C':
                o->config = arg;
                return 0;
        case 'F':
                if (!all_print(arg) || strlen(arg) > FULL_NAME_MAX)
                        return usage_error("-F full name must be at most %d printable characters "
                                           "(no CR, LF or other control characters)",
                                           FULL_NAME_MAX);
                o->full_name = arg;
                return 0;
        case 'N':
                if (!(o->notify = parse_notify(arg)))
                        warn("bad -N option value -- ignored");
                return 0;
        case 'R':
                if (strcasecmp(arg, "full") == 0)
                        o->ret = DSN_RET_FULL;
                else if (strcasecmp(arg, "hdrs") == 0)
                        o->ret = DSN_RET_HDRS;
                else
                        warn("bad -R option value -- ignored");
                return 0;
        case 'V':
                if (strlen(arg) > ENVID_MAX)
                        warn("too long -V option value -- ignored");
                else if (!all_print(arg))
                        warn("bad syntax in -V option value -- ignored");
                else
                        o->envid = arg;
                return 0;
        case 'X':
                return usage_error("unsupported: -X%c%s", arg[0], arg[0] == 'V' ? " (VERP)" : "");
        case 'b':
                return opt_b(o, arg);
        case 'f':
        case 'r':
                o->sender = arg;
                return 0;
        case 'o':
                return opt_o(o, arg);
        case 'q':
                return opt_q(o, arg);
        default: /* -A -L -O -e -h -p: accepted and ignored, as by Postfix */
                return 0;
        }
}

static int opt_flag(struct options *o, int c)
{
        switch (c) {
        case 'I':
                return usage_error("-I: tarry has no alias database");
        case 'n':
                return usage_error("-n option not supported");
        case 'i':
                o->dot_ends = false;
                return 0;
        case 't':
                o->extract = true;
                return 0;
        case 'v':
                o->verbose++;
                return 0;
        default: /* -G -U -c -m -x: ignored */
                return 0;
        }
}

#define OPTSTRING "+:A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"

static int parse_options(int argc, char **argv, struct options *o)
{
        opterr = 0;
        while (optind < argc) {
                if (strcmp(argv[optind], "-q") == 0) /* not getopt compatible */
                        return usage_error("-q: tarryd retries on its own schedule; "
                                           "use 'tarryq -f' to flush the queue");
                int c = getopt(argc, argv, OPTSTRING);
                if (c == -1)
                        break;
                int ex;
                if (c == '?')
                        ex = usage_error("unknown option -%c (usage: %s [options] [recipient ...])",
                                         optopt, prog);
                else if (c == ':')
                        ex = usage_error("option -%c requires an argument", optopt);
                else if (optarg)
                        ex = opt_value(o, c, optarg);
                else
                        ex = opt_flag(o, c);
                if (ex)
                        return ex;
        }
        if (o->extract && o->mode != MODE_ENQUEUE)
                return usage_error("-t can be used only in delivery mode");
        return 0;
}

/* ---- building the envelope ---- */

struct qualify_ctx {
        const char *origin;
        const char *what;     /* "recipient", "sender" */
        char *first;          /* sender: the first address */
        struct envelope *env; /* recipients go here */
        int ex;
};

static int bad_address(const char *what, const char *raw, size_t len, const char *why)
{
        fprintf(stderr, "%s: bad %s address '", prog, what);
        cli_print_escaped(stderr, raw, len);
        fprintf(stderr, "': %s\n", why);
        return EX_USAGE;
}

static int take_address(const char *addr, size_t len, void *userdata)
{
        struct qualify_ctx *c = userdata;
        const char *why = NULL;
        char *a = NULL;
        if (cli_qualify(addr, len, c->origin, &a, &why) < 0)
                return c->ex = bad_address(c->what, addr, len, why);
        if (!c->env) {
                if (!c->first)
                        c->first = a;
                else
                        free(a);
                return 0;
        }
        int r = cli_add_rcpt(c->env, a);
        free(a);
        if (r < 0)
                return c->ex = usage_error("too many recipients");
        return 0;
}

/* A command-line address list; control characters are refused before parsing. */
static int parse_arg_addresses(struct qualify_ctx *c, const char *arg)
{
        if (!all_print(arg))
                return bad_address(c->what, arg, strlen(arg),
                                   "contains CR, LF or a control character");
        const char *why = NULL;
        int r = hdr_parse_addresses(arg, strlen(arg), take_address, c, &why);
        if (r < 0 && !c->ex)
                return bad_address(c->what, arg, strlen(arg), why);
        return c->ex;
}

/* -f "" and -f "<>" mean the null sender. */
static bool is_null_sender(const char *s)
{
        s += strspn(s, " \t");
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
                n--;
        return n == 0 || (n == 2 && s[0] == '<' && s[1] == '>');
}

static int set_sender(struct envelope *env, const struct options *o, const struct tarry_config *cfg,
                      const char *user)
{
        char *sender = NULL;
        if (!o->sender) {
                size_t n = strlen(user) + strlen(cfg->myorigin) + 2;
                if (!(sender = malloc(n)))
                        return EX_OSERR;
                snprintf(sender, n, "%s@%s", user, cfg->myorigin);
        } else if (!is_null_sender(o->sender)) {
                struct qualify_ctx c = {.origin = cfg->myorigin, .what = "sender"};
                int ex = parse_arg_addresses(&c, o->sender);
                if (ex || !c.first) {
                        free(c.first);
                        return ex ? ex
                                  : bad_address("sender", o->sender, strlen(o->sender),
                                                "no address in it");
                }
                sender = c.first;
        } else if (!(sender = strdup(""))) {
                return EX_OSERR;
        }
        if (o->sender && !cfg_sender_allowed(cfg, getuid(), user, sender)) {
                fprintf(stderr,
                        "%s: user %s may not set the envelope sender (-f %s): not allowed by "
                        "allow_sender_override in %s\n",
                        prog, user, sender[0] ? sender : "<>", cfg->path);
                free(sender);
                return EX_NOPERM;
        }
        free(env->sender);
        env->sender = sender;
        return 0;
}

static int build_envelope(struct envelope *env, const struct options *o,
                          const struct tarry_config *cfg, char **rcpts, int n_rcpts)
{
        env->uid = getuid();
        struct passwd *pw = getpwuid(env->uid);
        char num[32];
        snprintf(num, sizeof(num), "%u", (unsigned)env->uid);
        if (!pw && !o->sender) {
                fprintf(stderr, "%s: no login name found for user ID %s; use -f sender\n", prog,
                        num);
                return EX_NOUSER;
        }
        if (!(env->user = strdup(pw ? pw->pw_name : num)))
                return EX_OSERR;
        int ex = set_sender(env, o, cfg, env->user);
        if (ex)
                return ex;
        if (o->full_name && !(env->full_name = strdup(o->full_name)))
                return EX_OSERR;
        env->ret = o->ret;
        if (o->envid) {
                env->envid = cli_xtext_encode(o->envid);
                if (!env->envid)
                        return EX_OSERR;
                if (strlen(env->envid) > ENVID_MAX) {
                        warn("too long -V option value -- ignored");
                        free(env->envid);
                        env->envid = NULL;
                }
        }
        for (int i = 0; i < n_rcpts; i++) {
                struct qualify_ctx c = {
                    .origin = cfg_rcpt_origin(cfg), .what = "recipient", .env = env};
                if ((ex = parse_arg_addresses(&c, rcpts[i])))
                        return ex;
        }
        return 0;
}

/* ---- reading the message ---- */

static int exit_for_submit(int r)
{
        if (r == -EMSGSIZE || r == -EBADMSG)
                return EX_DATAERR;
        return cli_exit_for_spool_error(r);
}

/* stdin into sub; a "." line ends it unless -i. 0, a submit error, or
 * -ENODATA when reading stdin failed. */
static int read_message(struct submit *sub, bool dot_ends)
{
        struct line_reader *lr = malloc(sizeof(*lr));
        if (!lr)
                return -ENOMEM;
        lr_init(lr, STDIN_FILENO);
        bool line_start = true;
        int r = 0;
        for (;;) {
                const char *p;
                size_t n;
                bool eol;
                int got = lr_next(lr, 0, &p, &n, &eol);
                if (got < 0)
                        r = -ENODATA;
                if (got <= 0)
                        break;
                if (dot_ends && line_start && eol && n == 1 && p[0] == '.')
                        break;
                if ((r = submit_line(sub, p, n, eol)) < 0)
                        break;
                line_start = eol;
        }
        free(lr);
        return r;
}

/* ---- privileges ---- */

/* Set-group-ID (or set-user-ID) and run by someone else: the binary's extra
 * rights must not be steerable by the caller. */
static bool privileged(void)
{
        return getuid() != geteuid() || getgid() != getegid();
}

/* Give up the set-group-ID group for good: real, effective and saved. */
static int drop_group(void)
{
        gid_t g = getgid();
        if (setresgid(g, g, g) < 0 || getegid() != g) {
                fprintf(stderr, "%s: cannot give up the set-group-ID group: %s\n", prog,
                        strerror(errno));
                return EX_OSERR;
        }
        return 0;
}

/* May the real user write the spool's private folders (root, its owner, its
 * group)? Only a refusal (EACCES) sends the message to the maildrop; a
 * missing or broken spool is reported as such by the direct path. */
static bool spool_closed_to_user(const char *spool)
{
        static const char *const dirs[] = {"tmp", "incoming"};
        char path[PATH_MAX];
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(path, sizeof(path), "%s/%s", spool, dirs[i]);
                if (faccessat(AT_FDCWD, path, W_OK | X_OK, 0) < 0) /* real IDs */
                        return errno == EACCES;
        }
        return false;
}

/* The spool itself when the real user may write it, else its maildrop/; the
 * set-group-ID group is given up as soon as either is open. */
static int open_submission_spool(const struct tarry_config *cfg, struct queue **q)
{
        int ex;
        if (!spool_closed_to_user(cfg->spool_dir)) {
                int r = queue_open(cfg->spool_dir, QUEUE_OPEN_SUBMIT, q); /* incoming/ only */
                ex = r < 0 ? cli_exit_for_spool_error(r) : 0;
                if (r < 0)
                        fprintf(stderr, "%s: cannot open the spool %s: %s\n", prog, cfg->spool_dir,
                                strerror(-r));
        } else {
                int r = queue_open_maildrop(cfg->spool_dir, q);
                ex = r < 0 ? EX_TEMPFAIL : 0;
                if (r < 0)
                        fprintf(stderr, "%s: cannot write the spool %s, nor its maildrop: %s%s\n",
                                prog, cfg->spool_dir, strerror(-r),
                                r == -EACCES ? " (is sendmail installed set-group-ID "
                                               "tarrydrop?)"
                                             : "");
        }
        int dx = drop_group();
        if (dx && !ex) {
                queue_close(*q);
                return dx;
        }
        return ex;
}

static int enqueue(const struct options *o, const struct tarry_config *cfg, char **rcpts,
                   int n_rcpts)
{
        _cleanup_(envelope_freep) struct envelope *env = envelope_new();
        if (!env)
                return EX_OSERR;
        int ex = build_envelope(env, o, cfg, rcpts, n_rcpts);
        if (ex)
                return ex;
        if (!o->extract && env->n_rcpt == 0)
                return usage_error("Recipient addresses must be specified on the command line or "
                                   "via the -t option");
        struct queue *q = NULL;
        if ((ex = open_submission_spool(cfg, &q)))
                return ex;
        struct submit_opts so = {.cfg = cfg,
                                 .extract_rcpts = o->extract,
                                 .from_addr = env->sender[0] ? env->sender : NULL,
                                 .full_name = o->full_name};
        char from[400];
        if (!so.from_addr) {
                snprintf(from, sizeof(from), "%s@%s", env->user, cfg->myorigin);
                so.from_addr = from;
        }
        struct submit *sub = NULL;
        int r = submit_begin(q, &so, &sub);
        if (r < 0) {
                fprintf(stderr, "%s: cannot create a queue file in the spool %s: %s\n", prog,
                        cfg->spool_dir, strerror(-r));
                queue_close(q);
                return cli_exit_for_spool_error(r);
        }
        r = read_message(sub, o->dot_ends);
        if (r == -ENODATA) {
                fprintf(stderr, "%s: error reading the message from standard input\n", prog);
                ex = EX_DATAERR;
        } else if (r == 0 && (r = submit_finish(sub, env)) == 0 && env->n_rcpt == 0)
                ex = usage_error("No recipient addresses found in message header");
        if (!ex && r == 0) {
                for (size_t i = 0; i < env->n_rcpt; i++)
                        env->rcpt[i].notify = o->notify;
                r = submit_commit(sub, env);
        }
        if (!ex && r < 0) {
                fprintf(stderr, "%s: %s\n", prog, submit_error(sub));
                ex = exit_for_submit(r);
        }
        submit_free(sub);
        queue_close(q);
        if (!ex && o->verbose > 1)
                fprintf(stderr, "%s: %s: queued for %zu recipient%s\n", prog, env->id, env->n_rcpt,
                        env->n_rcpt == 1 ? "" : "s");
        return ex;
}

static int run_smtp(const struct tarry_config *cfg)
{
        struct queue *q = NULL;
        int ex = open_submission_spool(cfg, &q);
        if (ex) {
                printf("421 4.3.0 %s Error: mail system unavailable\r\n", cfg->myhostname);
                fflush(stdout);
                return ex;
        }
        ex = smtp_server_run(cfg, q, STDIN_FILENO, stdout);
        queue_close(q);
        return ex;
}

/* As Postfix restricts alternate_config_directories: a privileged sendmail
 * pointed at another config would write another spool with our group. */
static int check_alternate_config(const struct options *o)
{
        if (!privileged() || getuid() == 0)
                return 0;
        const char *env = getenv("TARRY_CONFIG");
        if (!o->config && !(env && *env))
                return 0;
        fprintf(stderr,
                "%s: %s is honoured only for root: this sendmail is set-group-ID, and another "
                "configuration could point it at another spool\n",
                prog, o->config ? "-C" : "$TARRY_CONFIG");
        return EX_NOPERM;
}

/* The tarryq next to this binary (a build tree, or both installed in one
 * folder), else the installed one. */
static void tarryq_path(char *out, size_t len)
{
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                char *slash = strrchr(self, '/');
                if (slash &&
                    snprintf(out, len, "%.*s/tarryq", (int)(slash - self), self) < (int)len &&
                    access(out, X_OK) == 0)
                        return;
        }
        snprintf(out, len, "%s/tarryq", TARRY_BINDIR);
}

/* mailq, sendmail -bp: the listing is tarryq -p's, exactly. Returns only on failure. */
static int exec_listing(const char *config)
{
        char path[PATH_MAX];
        tarryq_path(path, sizeof(path));
        char *argv[] = {"tarryq", "-p", config ? "-C" : NULL, (char *)config, NULL};
        fflush(NULL);
        execv(path, argv);
        fprintf(stderr, "%s: cannot run %s for the queue listing: %s\n", prog, path,
                strerror(errno));
        return EX_OSFILE;
}

static int run(int argc, char **argv)
{
        const char *base = strrchr(argv[0], '/');
        base = base ? base + 1 : argv[0];
        struct options o = {.mode = MODE_ENQUEUE, .dot_ends = true};
        if (strcmp(base, "mailq") == 0) {
                prog = "mailq";
                o.mode = MODE_MAILQ;
        }
        signal(SIGPIPE, SIG_IGN);
        signal(SIGXFSZ, SIG_IGN); /* a file size limit is a write error (EFBIG), not death */
        umask(007);
        int ex = parse_options(argc, argv, &o);
        if (ex)
                return ex;
        if ((ex = check_alternate_config(&o)))
                return ex;
        if (o.mode != MODE_ENQUEUE && o.mode != MODE_SMTP && (ex = drop_group()))
                return ex;
        if (o.mode == MODE_MAILQ)
                return exec_listing(o.config);
        if (o.mode == MODE_IGNORE || (o.mode == MODE_ENQUEUE && o.queue_run))
                return 0;
        struct tarry_config *cfg = NULL;
        if ((ex = cli_load_config(prog, o.config, &cfg)))
                return ex;
        if (o.mode == MODE_SMTP)
                ex = run_smtp(cfg);
        else
                ex = enqueue(&o, cfg, argv + optind, argc - optind);
        cfg_free(cfg);
        return ex;
}

/* Jansson seeds its hash function from /dev/urandom (open, read, close) at
 * the first object; the same randomness from getrandom(2) costs one call. */
static void seed_json(void)
{
        size_t seed = 0;
        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed) && seed != 0)
                json_object_seed(seed);
}

int main(int argc, char **argv)
{
        seed_json();
        int ex = run(argc, argv);
        /* Paths that end before the spool is opened give the group up here. */
        gid_t g = getgid();
        if (setresgid(g, g, g) < 0 && ex == 0)
                ex = EX_OSERR;
        return ex;
}
