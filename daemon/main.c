/* daemon/main.c — tarryd: start-up, signals, reload, sd_notify, shutdown.
 *
 * One process, one thread, one sd-event loop (and, for a few seconds after
 * start, the sender check's thread, which only asks DNS and logs). Start-up recovers the spool and
 * rebuilds the scheduler from the envelopes before READY=1; SIGTERM stops new
 * attempts and gives running ones shutdown_timeout to finish; a second SIGTERM
 * leaves at once (the spool is always consistent, so nothing accepted is lost).
 */
#include "daemon/log.h"
#include "daemon/sitetally.h"
#include "daemon/spoollock.h"
#include "daemon/tarryd.h"
#include "common/cleanup.h"
#include "common/fileio.h"
#include "sendercheck/sendercheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

struct options {
        const char *config;
        bool check;
};

/* Retired configurations stay alive until exit: running attempts may point into them. */
struct old_config {
        struct tarry_config *cfg;
        struct old_config *next;
};
static struct old_config *retired;

/* Likewise retired classifiers: decisions already made point at their rule names. */
struct old_classifier {
        struct sched_classifier *cls;
        struct old_classifier *next;
};
static struct old_classifier *retired_classifiers;

static void retire_classifier(struct sched_classifier *cls)
{
        struct old_classifier *o = malloc(sizeof(*o));
        if (!o)
                return; /* leak it rather than free it under a live pointer */
        *o = (struct old_classifier){cls, retired_classifiers};
        retired_classifiers = o;
}

static void usage(FILE *f)
{
        fprintf(f,
                "usage: tarryd [-C FILE] [--check]\n"
                "  -C FILE    configuration file (default: $TARRY_CONFIG, else %s)\n"
                "  --check    validate the configuration, print it with defaults, exit\n",
                CFG_DEFAULT_PATH);
}

static int parse_options(int argc, char **argv, struct options *o)
{
        static const struct option longopts[] = {
            {"check", no_argument, NULL, 'k'},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},
            {NULL, 0, NULL, 0},
        };
        int c;
        while ((c = getopt_long(argc, argv, "C:hV", longopts, NULL)) != -1) {
                switch (c) {
                case 'C':
                        o->config = optarg;
                        break;
                case 'k':
                        o->check = true;
                        break;
                case 'h':
                        usage(stdout);
                        exit(0);
                case 'V':
                        printf("tarryd %s\n", TARRY_VERSION);
                        exit(0);
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "tarryd: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

/* The account tarryd runs as: the configured user when started as root
 * (root itself only if the config names it), else whoever started it. */
static int resolve_user(const struct tarry_config *cfg, uid_t *uid, gid_t *gid)
{
        if (geteuid() != 0) {
                *uid = geteuid();
                *gid = getegid();
                return 0;
        }
        struct passwd *pw = getpwnam(cfg->user);
        if (!pw) {
                fprintf(stderr,
                        "tarryd: %s: user '%s' does not exist; create it or set 'user =' in "
                        "[main] (user = root runs tarryd as root, explicitly)\n",
                        cfg->path, cfg->user);
                return -ESRCH;
        }
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
        return 0;
}

static int drop_privileges(const struct tarry_config *cfg, uid_t uid, gid_t gid)
{
        if (geteuid() != 0 || uid == 0)
                return 0;
        if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
                return -errno;
        if (setuid(0) == 0)
                return -EPERM; /* the drop did not stick */
        log_info("running as user %s (uid %u)", cfg->user, (unsigned)uid);
        return 0;
}

/* The group maildrop/ gets when root created it: tarrydrop if this machine
 * has it (the package's and tmpfiles.d's layout), else the daemon's own. */
static gid_t maildrop_gid(gid_t fallback)
{
        char buf[4096];
        struct group gr, *res = NULL;
        if (getgrnam_r(QUEUE_MAILDROP_GROUP, &gr, buf, sizeof(buf), &res) == 0 && res)
                return gr.gr_gid;
        return fallback;
}

/* tarryd started as root: the spool folders root created (a fresh spool) must
 * belong to the user tarryd becomes, laid out as tmpfiles.d lays them out.
 * Every folder was opened with O_NOFOLLOW|O_DIRECTORY (a link planted in the
 * spool is refused before this runs), and only what root owns is changed: a
 * folder that already belongs to someone is left as it is. */
static void chown_spool(struct tarryd *d, uid_t uid, gid_t gid)
{
        if (geteuid() != 0 || uid == 0)
                return;
        struct queue_folder f[QUEUE_FOLDERS_MAX];
        size_t n = queue_folders(d->queue, f);
        gid_t drop_gid = maildrop_gid(gid);
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (fstat(f[i].fd, &st) < 0) {
                        log_warn("spool %s: cannot check %s: %m", d->cfg->spool_dir, f[i].name);
                        continue;
                }
                gid_t want = f[i].kind == QUEUE_FOLDER_MAILDROP ? drop_gid : gid;
                if (st.st_uid == uid && (st.st_gid == want || st.st_gid != 0))
                        continue; /* already the user's */
                if (st.st_uid != 0 && st.st_uid != uid) {
                        log_warn("spool %s: %s belongs to uid %u, not root or %s: left as it is",
                                 d->cfg->spool_dir, f[i].name, (unsigned)st.st_uid, d->cfg->user);
                        continue;
                }
                /* a group the administrator chose stays */
                if (fchown(f[i].fd, uid, st.st_gid == 0 ? want : (gid_t)-1) < 0)
                        log_warn("spool %s: cannot give %s to %s: %m", d->cfg->spool_dir, f[i].name,
                                 d->cfg->user);
        }
}

/* Which entry of the spool made queue_open fail with ELOOP/ENOTDIR: a link or
 * a file where a folder should be is refused, and named. */
static const char *refused_entry(const char *spool, struct stat *st)
{
        static const char *const names[] = {"tmp",  "state",   "incoming",        "active",
                                            "hold", "corrupt", QUEUE_MAILDROP_DIR};
        char path[PATH_MAX];
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                snprintf(path, sizeof(path), "%s/%s", spool, names[i]);
                if (lstat(path, st) == 0 && !S_ISDIR(st->st_mode))
                        return names[i];
        }
        return NULL;
}

static int report_open_error(const char *spool, int r)
{
        struct stat st;
        const char *bad = r == -ELOOP || r == -ENOTDIR ? refused_entry(spool, &st) : NULL;
        if (bad)
                fprintf(stderr, "tarryd: spool %s: %s/%s is %s, not a folder: refused\n", spool,
                        spool, bad, S_ISLNK(st.st_mode) ? "a symbolic link" : "not a folder");
        else
                fprintf(stderr, "tarryd: cannot open spool %s: %s\n", spool, strerror(-r));
        return EX_CANTCREAT;
}

/* One tarryd per spool, for its whole life: a second one would schedule the
 * same messages. Taken before anything is changed (sockets, recovery). A lock
 * that outlives the tarryd that took it (kill -9 while it spawned a worker)
 * is waited for, up to SPOOL_LOCK_WAIT_US (daemon/spoollock.h). */
static int lock_spool(struct tarryd *d)
{
        const char *spool = d->cfg->spool_dir;
        struct spool_lock_report rep;
        int r = spool_lock_take(d->queue, spool, SPOOL_LOCK_WAIT_US, &rep);
        const char *by = rep.holders[0] ? rep.holders : "none of this user's processes has it open";
        if (r == -EBUSY && rep.named_running) {
                fprintf(stderr, "tarryd: spool %s is in use by tarryd (pid %d)\n", spool,
                        (int)rep.named);
                return EX_TEMPFAIL;
        }
        char who[64] = "it names no tarryd";
        if (rep.named > 0)
                snprintf(who, sizeof(who), "pid %d, which took it, is no running tarryd",
                         (int)rep.named);
        if (r == -EBUSY) {
                fprintf(stderr,
                        "tarryd: spool %s: state/%s still locked after %lld s (%s; holders: %s)\n",
                        spool, QUEUE_LOCK_FILE, (long long)(rep.waited_us / 1000000), who, by);
                return EX_TEMPFAIL;
        }
        if (r < 0) {
                fprintf(stderr, "tarryd: spool %s: cannot lock state/%s: %s\n", spool,
                        QUEUE_LOCK_FILE, strerror(-r));
                return r == -EPERM ? EX_CANTCREAT : EX_IOERR;
        }
        if (rep.waited)
                fprintf(stderr,
                        "tarryd: spool %s: state/%s was still locked (%s; holders: %s); free "
                        "after %lld ms\n",
                        spool, QUEUE_LOCK_FILE, who, by, (long long)(rep.waited_us / 1000));
        return 0;
}

static int on_shutdown_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        (void)s;
        (void)usec;
        struct tarryd *d = userdata;
        log_warn("shutdown: %d attempt(s) still running after %llds; aborting them", d->inflight,
                 (long long)d->cfg->shutdown_timeout_s);
        smtpc_pool_abort_all(d->pool);
        return sd_event_exit(d->loop, 0);
}

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        (void)s;
        struct tarryd *d = userdata;
        if (d->stopping) {
                log_warn("second signal %d: exiting now; running attempts will be retried",
                         (int)si->ssi_signo);
                return sd_event_exit(d->loop, 0);
        }
        d->stopping = true;
        sd_notify(0, "STOPPING=1");
        log_info("signal %d: stopping (%d attempt(s) running)", (int)si->ssi_signo, d->inflight);
        if (d->inflight == 0)
                return sd_event_exit(d->loop, 0);
        uint64_t now;
        sd_event_now(d->loop, CLOCK_MONOTONIC, &now);
        return sd_event_add_time(d->loop, NULL, CLOCK_MONOTONIC,
                                 now + (uint64_t)d->cfg->shutdown_timeout_s * 1000000, 0,
                                 on_shutdown_timeout, d);
}

/* A source_address that is not (yet) an address of this machine makes every
 * delivery from it fail to bind: say so now, not at the first deferral. A
 * warning, not an error: a floating address may arrive later. */
static void check_source_addresses(const struct tarry_config *cfg)
{
        for (size_t i = 0; i < cfg->n_source_addresses; i++) {
                const char *a = cfg->source_addresses[i];
                struct sockaddr_storage ss = {0};
                socklen_t len;
                struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
                struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
                if (inet_pton(AF_INET, a, &v4->sin_addr) == 1) {
                        v4->sin_family = AF_INET;
                        len = sizeof(*v4);
                } else if (inet_pton(AF_INET6, a, &v6->sin6_addr) == 1) {
                        v6->sin6_family = AF_INET6;
                        len = sizeof(*v6);
                } else {
                        continue; /* config load refuses these */
                }
                int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        continue;
                if (bind(fd, (struct sockaddr *)&ss, len) < 0)
                        log_warn("source_address %s is not usable here (%s): deliveries from it "
                                 "will be deferred until it is",
                                 a, strerror(errno));
                close(fd);
        }
}

/* Lines of the config that load but probably mean something else. */
static void log_config_warnings(const struct tarry_config *cfg)
{
        for (size_t i = 0; i < cfg->n_warnings; i++)
                log_warn("%s", cfg->warnings[i]);
}

/* Remove the drafts of submitters that died (kill -9 sendmail): nothing
 * reads them, they only take space. Safe while sendmail runs: a draft
 * whose writer lives is locked and kept. */
static void sweep_tmp(struct tarryd *d, const char *when)
{
        int r = queue_recover_tmp(d->queue);
        if (r > 0)
                log_info("%s: removed %d abandoned submission(s) from tmp/", when, r);
        else if (r < 0)
                log_error("%s: cannot clean tmp/: %s", when, strerror(-r));
}

static int on_sweep_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        (void)usec;
        sweep_tmp(userdata, "hourly clean-up");
        int r = sd_event_source_set_time_relative(s, TMP_SWEEP_US);
        return r < 0 ? r : sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

/* The sender check of tarryq check-sender (sendercheck.h), on a thread of
 * its own: DNS may take seconds, and tarryd neither waits for it nor refuses
 * to run; each failure is a warning. arg: a configuration of its own. */
static void *sender_check_thread(void *arg)
{
        struct tarry_config *cfg = arg;
        struct sender_report rep;
        int r = sender_check_run(cfg, &rep);
        if (r < 0)
                log_warn("sender check: cannot ask DNS: %s", strerror(-r));
        for (size_t i = 0; r == 0 && i < rep.n; i++)
                if (!rep.v[i].pass)
                        log_warn("sender check failed: %s %s: %s; fix: %s",
                                 sender_check_name(rep.v[i].kind), rep.v[i].subject, rep.v[i].found,
                                 rep.v[i].publish);
        if (r == 0)
                log_info("sender check: %zu of %zu checks passed (tarryq check-sender)",
                         rep.n - rep.n_failed, rep.n);
        sender_report_clear(&rep);
        cfg_free(cfg);
        return NULL;
}

static void start_sender_check(struct tarryd *d)
{
        struct tarry_config *cfg = NULL;
        char err[512];
        pthread_t t;
        pthread_attr_t attr;
        if (cfg_load(d->config_path, &cfg, err, sizeof(err)) < 0)
                return; /* it was read a moment ago: changed meanwhile, see the reload */
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, sender_check_thread, cfg) != 0) {
                log_warn("sender check: cannot start a thread for it; skipped");
                cfg_free(cfg);
        }
        pthread_attr_destroy(&attr);
}

/* New DNS servers: a new site cache (MX sets are looked up again, through
 * them). Messages waiting for a lookup of the old cache come back after
 * SITE_WAIT_US. Same servers: the cache stays (sites are computed from the
 * cached MX sets with the current providers at each lookup). */
static void reload_sites(struct tarryd *d, const struct tarry_config *old)
{
        bool same = old && old->n_dns_servers == d->cfg->n_dns_servers;
        for (size_t i = 0; same && i < old->n_dns_servers; i++)
                same = strcmp(old->dns_servers[i], d->cfg->dns_servers[i]) == 0;
        if (same && d->sites)
                site_cache_set_min_ttl(d->sites, d->cfg->mx_cache_min_ttl_s);
        if (same)
                return;
        struct site_cache *c = NULL;
        int r = site_cache_new(d->loop, d->cfg, deliver_site_ready, d, &c);
        if (r < 0) {
                log_error("reload: cannot set up the MX lookups with the new dns_servers (%s); "
                          "keeping the old ones",
                          strerror(-r));
                return;
        }
        site_cache_free(d->sites);
        d->sites = c;
}

static int reload(struct tarryd *d)
{
        struct tarry_config *cfg = NULL;
        char err[512];
        int r = cfg_load(d->config_path, &cfg, err, sizeof(err));
        if (r < 0) {
                log_error("reload failed, keeping the running configuration: %s", err);
                return r;
        }
        if (fleet_check(cfg, err, sizeof(err)) < 0) {
                log_error("reload failed, keeping the running configuration: %s", err);
                cfg_free(cfg);
                return -EINVAL;
        }
        if (strcmp(cfg->spool_dir, d->cfg->spool_dir) != 0)
                log_warn("reload: spool_dir changed; it takes effect at restart");
        control_note_reload(d->cfg, cfg);
        struct sched_classifier *cls = NULL;
        r = sched_classifier_for_config(cfg, &cls, err, sizeof(err));
        if (r < 0) {
                log_error("reload failed, keeping the running configuration: %s", err);
                cfg_free(cfg);
                return r;
        }
        struct dkim_signer *dkim = NULL;
        r = dkim_signer_load(cfg, d->uid, &dkim, err, sizeof(err));
        if (r < 0) {
                log_error("reload failed, keeping the running configuration: %s", err);
                sched_classifier_free(cls);
                cfg_free(cfg);
                return r;
        }
        r = smtpc_pool_set_config(d->pool, cfg, d->config_path);
        if (r < 0) {
                log_error("reload failed, keeping the running configuration: %s", strerror(-r));
                dkim_signer_free(dkim);
                sched_classifier_free(cls);
                cfg_free(cfg);
                return r;
        }
        dkim_signer_free(d->dkim); /* nothing holds it: signing is done at once */
        d->dkim = dkim;
        sched_set_config(d->sched, cfg, cls);
        diagnoses_reload(d, cfg);
        retire_classifier(d->classifier);
        d->classifier = cls;
        struct old_config *o = malloc(sizeof(*o));
        if (o) {
                *o = (struct old_config){d->cfg, retired};
                retired = o;
        }
        const struct tarry_config *old = d->cfg; /* retired, not freed */
        d->cfg = cfg;
        reload_sites(d, o ? o->cfg : NULL);
        fleet_reload(d, old);
        dsn_policy_from_config(&d->dsn_policy, cfg);
        log_info("configuration reloaded from %s", d->config_path);
        log_config_warnings(cfg);
        check_source_addresses(cfg);
        sweep_tmp(d, "reload");
        deliver_arm_timer(d);
        return 0;
}

static int on_reload_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        (void)s;
        (void)si;
        struct tarryd *d = userdata;
        sd_notify(0, "RELOADING=1");
        reload(d);
        sd_notify(0, "READY=1");
        control_update_status_line(d);
        return 0;
}

static int setup_signals(struct tarryd *d)
{
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        signal(SIGPIPE, SIG_IGN);
        /* A file size limit (RLIMIT_FSIZE) must fail the write with EFBIG, which
         * is handled like a full disk, not kill the daemon. */
        signal(SIGXFSZ, SIG_IGN);
        int r = sd_event_add_signal(d->loop, NULL, SIGTERM, on_stop_signal, d);
        if (r >= 0)
                r = sd_event_add_signal(d->loop, NULL, SIGINT, on_stop_signal, d);
        if (r >= 0)
                r = sd_event_add_signal(d->loop, NULL, SIGHUP, on_reload_signal, d);
        return r;
}

/* Once per loop iteration: make this iteration's pickups and removals durable. */
static int on_post(sd_event_source *s, void *userdata)
{
        (void)s;
        struct tarryd *d = userdata;
        log_flush(); /* this iteration's records in one write */
        int r = queue_sync(d->queue);
        /* once per run of failures: this runs every loop iteration */
        if (r < 0 && !d->sync_failing)
                log_error("cannot sync the spool folders: %s; will retry", strerror(-r));
        else if (r == 0 && d->sync_failing)
                log_info("spool folders synced again");
        d->sync_failing = r < 0;
        return 0;
}

/* The scheduler's learned.json: a failed write is logged (once per run of
 * failures), counted, and tried again by the spool retry timer; what was
 * learned stays in memory meanwhile. */
static int state_write(void *userdata, const char *name, const void *buf, size_t len)
{
        struct tarryd *d = userdata;
        int r = queue_state_write(d->queue, name, buf, len);
        if (r < 0) {
                if (!d->state_unsaved)
                        log_error("cannot write state/%s: %s; will retry", name, strerror(-r));
                d->state_unsaved = true;
                deliver_count_spool_error(d, "state");
                if (!d->stopping)
                        deliver_retry_later(d);
        } else if (d->state_unsaved) {
                d->state_unsaved = false;
                log_info("state/%s written after an earlier failure", name);
        }
        return r;
}

static int state_read(void *userdata, const char *name, size_t limit, char **out, size_t *len)
{
        struct tarryd *d = userdata;
        return queue_state_read(d->queue, name, limit, out, len);
}

/* Delivery workers are this same binary, started as `tarryd --smtp-worker`. */
static int start_pool(struct tarryd *d)
{
        static char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
                return -errno;
        self[n] = '\0';
        static const char *wargv[3];
        wargv[0] = self;
        wargv[1] = "--smtp-worker";
        wargv[2] = NULL;
        struct smtpc_pool_options opt = {.worker_argv = wargv, .config_path = d->config_path};
        return smtpc_pool_new(d->loop, d->cfg, &opt, &d->pool);
}

static int start(struct tarryd *d, uid_t uid, gid_t gid)
{
        char err[512];
        struct sched_io io = {state_write, state_read, NULL};
        uint64_t seed = (uint64_t)now_monotonic_us() ^ ((uint64_t)getpid() << 32);
        int r = queue_open(d->cfg->spool_dir, QUEUE_OPEN_CREATE, &d->queue);
        if (r < 0)
                return report_open_error(d->cfg->spool_dir, r);
        if ((r = lock_spool(d)) != 0)
                return r;
        chown_spool(d, uid, gid);
        queue_set_batched_dirsync(d->queue, true);
        if ((r = sd_event_add_post(d->loop, NULL, on_post, d)) < 0) {
                fprintf(stderr, "tarryd: cannot set up the event loop: %s\n", strerror(-r));
                return EX_OSERR;
        }
        if ((r = sched_classifier_for_config(d->cfg, &d->classifier, err, sizeof(err))) < 0) {
                fprintf(stderr, "tarryd: %s\n", err);
                return EX_CONFIG;
        }
        if ((r = dkim_signer_load(d->cfg, uid, &d->dkim, err, sizeof(err))) < 0) {
                fprintf(stderr, "tarryd: %s\n", err);
                return EX_CONFIG;
        }
        if ((r = control_start(d)) < 0)
                return EX_UNAVAILABLE;
        if ((r = drop_privileges(d->cfg, uid, gid)) < 0) {
                fprintf(stderr, "tarryd: cannot switch to user %s: %s\n", d->cfg->user,
                        strerror(-r));
                return EX_NOPERM;
        }
        io.userdata = d;
        if ((r = msgindex_new(&d->index)) < 0 || (r = site_tally_new(&d->site_tally)) < 0 ||
            (r = start_pool(d)) < 0 || (r = remover_new(d, &d->remover)) < 0 ||
            (r = sched_new(d->cfg, d->classifier, &io, seed, &d->sched)) < 0 ||
            (r = site_cache_new(d->loop, d->cfg, deliver_site_ready, d, &d->sites)) < 0 ||
            (r = diagnoses_start(d)) < 0) {
                fprintf(stderr, "tarryd: start-up failed: %s\n", strerror(-r));
                return EX_SOFTWARE;
        }
        sched_set_mover(d->sched, deliver_may_move, d);
        dsn_policy_from_config(&d->dsn_policy, d->cfg);
        r = sched_load_learned(d->sched, now_realtime_us());
        if (r == -EBADMSG)
                log_error("state/%s is corrupt; starting with nothing learned", SCHED_LEARNED_FILE);
        r = sched_load_destinations(d->sched, now_realtime_us());
        if (r < 0)
                log_error("state/%s: %s; destinations start with no suspension", SCHED_DESTS_FILE,
                          r == -EBADMSG ? "corrupt" : strerror(-r));
        else if (r > 0)
                log_info("state/%s: %d destination(s) still suspended, backing off or throttled",
                         SCHED_DESTS_FILE, r);

        if ((r = fleet_start(d)) != 0)
                return r;
        log_config_warnings(d->cfg);
        check_source_addresses(d->cfg);
        sweep_tmp(d, "recovery");
        d->starting = true;
        sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=starting: reading the spool",
                   (unsigned long long)STARTUP_EXTEND_US);
        if ((r = sd_event_add_time_relative(d->loop, NULL, CLOCK_MONOTONIC, TMP_SWEEP_US,
                                            60 * 1000000ULL, on_sweep_timer, d)) < 0 ||
            /* the watch on incoming/ before the start's scan of it: a message
             * committed between the two would otherwise be seen by neither */
            (r = pickup_start(d)) < 0 || (r = startup_begin(d)) < 0) {
                log_error("start-up: cannot read the spool: %s", strerror(-r));
                return EX_IOERR;
        }
        return 0;
}

/* Everything after the options: returns the exit code; teardown() frees. */
static int run(struct tarryd *d, const struct options *o)
{
        char err[512];
        d->config_path = strdup(cfg_path(o->config));
        if (!d->config_path)
                return EX_OSERR;
        if (cfg_load(d->config_path, &d->cfg, err, sizeof(err)) < 0) {
                fprintf(stderr, "tarryd: %s\n", err);
                return EX_CONFIG;
        }
        if (o->check) {
                struct passwd *pw = getpwnam(d->cfg->user);
                if (sched_classifier_for_config(d->cfg, &d->classifier, err, sizeof(err)) < 0 ||
                    dkim_signer_load(d->cfg, pw ? pw->pw_uid : geteuid(), &d->dkim, err,
                                     sizeof(err)) < 0 ||
                    fleet_check(d->cfg, err, sizeof(err)) < 0) {
                        fprintf(stderr, "tarryd: %s\n", err);
                        return EX_CONFIG;
                }
                for (size_t i = 0; i < d->cfg->n_warnings; i++)
                        fprintf(stderr, "tarryd: warning: %s\n", d->cfg->warnings[i]);
                cfg_print(stdout, d->cfg);
                return 0;
        }
        log_open();

        uid_t uid;
        gid_t gid;
        if (resolve_user(d->cfg, &uid, &gid) < 0)
                return EX_NOUSER;
        d->uid = uid;
        int r = sd_event_default(&d->loop);
        if (r < 0 || setup_signals(d) < 0) {
                fprintf(stderr, "tarryd: cannot set up the event loop: %s\n", strerror(-r));
                return EX_OSERR;
        }
        sd_event_set_watchdog(d->loop, true);
        r = start(d, uid, gid);
        if (r != 0)
                return r;

        log_info("started: %zu message(s) queued, spool %s; %zu from state/%s (due soon), %zu "
                 "listed to read or apply after READY",
                 msgindex_count(d->index), d->cfg->spool_dir, startup_from_snapshot(d),
                 QUEUE_SNAP_FILE, startup_unread(d));
        d->starting = false;
        log_flush();
        sd_notify(0, "READY=1");
        start_sender_check(d);
        control_update_status_line(d);
        deliver_run_due(d);

        r = sd_event_loop(d->loop);
        remover_free(d->remover); /* the batch under way; the rest is recovery's */
        d->remover = NULL;
        startup_write_snapshot(d); /* the next start needs no envelope */
        deliver_write_dirty(d);    /* a last try for state a full disk kept in memory */
        log_info("stopped");
        queue_sync(d->queue);
        if (d->sched)
                sched_save_learned(d->sched, now_realtime_us());
        return r < 0 ? EX_SOFTWARE : 0;
}

static void teardown(struct tarryd *d)
{
        remover_free(d->remover);
        startup_free(d);
        sd_event_source_unref(d->retry_timer);
        control_stop(d);
        fleet_stop(d);
        smtpc_pool_free(d->pool);
        site_cache_free(d->sites);
        free(d->site_waiters);
        sched_free(d->sched);
        diag_free(d->diag);
        sched_classifier_free(d->classifier);
        while (retired_classifiers) {
                struct old_classifier *n = retired_classifiers->next;
                sched_classifier_free(retired_classifiers->cls);
                free(retired_classifiers);
                retired_classifiers = n;
        }
        msgindex_free(d->index);
        message_tally_free(&d->tally);
        site_tally_free(d->site_tally);
        dkim_signer_free(d->dkim);
        queue_close(d->queue);
        status_metrics_free(d->metrics);
        sd_event_unref(d->loop);
        cfg_free(d->cfg);
        while (retired) {
                struct old_config *n = retired->next;
                cfg_free(retired->cfg);
                free(retired);
                retired = n;
        }
        free(d->config_path);
}

int main(int argc, char **argv)
{
        if (argc >= 2 && strcmp(argv[1], "--smtp-worker") == 0) {
                if (argc != 4 || strcmp(argv[2], "-C") != 0)
                        return EX_USAGE;
                return smtpc_worker_main(SMTPC_WORKER_FD, argv[3]);
        }
        struct options o = {0};
        if (parse_options(argc, argv, &o) < 0)
                return EX_USAGE;
        struct tarryd d = {.start_us = now_realtime_us()};
        int ex = run(&d, &o);
        teardown(&d);
        return ex;
}
