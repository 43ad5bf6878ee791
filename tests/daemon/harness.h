/* tests/daemon/harness.h — run the real tarryd and sendmail in a temp spool.
 *
 * A test makes a harness (temp dir, config written from a template with the
 * fixture's port filled in), starts tarryd as a child process, submits mail
 * with the real sendmail binary, and stops tarryd with a signal. Binaries are
 * found through $TARRY_BUILD_DIR (set by meson).
 *
 * tarryd runs as the package's unit runs it: started directly as an
 * unprivileged user (HARNESS_DAEMON_USER, made like the package's `tarry`
 * user if missing) with the supplementary group tarrydrop, on a spool laid
 * out as tmpfiles.d lays it out (spool 0711, folders 0750, maildrop/ 1730
 * group tarrydrop, all the user's); the temp dir is the user's too (it is
 * where the status socket goes, like /run/tarry). Submissions by the test
 * process are root's. h->as_root = true before harness_start starts tarryd
 * as root instead (it then switches to the config's user, unless that says
 * root), for tests about root; without real root (or inside a user
 * namespace) tarryd runs as the test's own user.
 */
#ifndef TARRY_TESTS_HARNESS_H
#define TARRY_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct harness {
        char dir[256];  /* temp dir: tarry.conf, spool/, tarryd.log */
        char conf[300]; /* path of tarry.conf */
        char log[300];  /* tarryd's stderr */
        char spool[300];
        pid_t tarryd;            /* 0 when not running */
        int status_port;         /* loopback TCP port of the status endpoint */
        bool spool_mounted;      /* spool/ is a tmpfs of the test's own (harness_spool_on_tmpfs) */
        bool as_root;            /* run tarryd as root (set before harness_start) */
        const char *extra_group; /* another supplementary group for tarryd (a unit drop-in's
                                    SupplementaryGroups=), or NULL */
        uid_t daemon_uid;        /* who tarryd runs as (harness_start) */
        gid_t daemon_gid;
};

#define HARNESS_DAEMON_USER "tarrytest-daemon"
#define HARNESS_DROP_GROUP  "tarrydrop"

/* Can this test process run tarryd as another user (real root, not in a user
 * namespace)? Then HARNESS_DAEMON_USER and tarrydrop exist once this returns. */
bool harness_can_switch_user(void);
/* In a child about to exec tarryd: become the daemon user, as User=,
 * Group= and SupplementaryGroups=tarrydrop of the unit make it (nothing when
 * h->as_root or harness_can_switch_user() is false). _exit(126) on failure. */
void harness_child_become_daemon(const struct harness *h);
/* Give path (made by the test as root) to the daemon user. */
void harness_give(const struct harness *h, const char *path);
/* chown -R the spool to the daemon user (a spool written by root tools). */
void harness_give_spool(const struct harness *h);

/* Make the temp dir and write tarry.conf: the common settings (spool, user,
 * short timeouts) followed by extra (more INI text, may be NULL). */
void harness_init(struct harness *h, const char *extra);
/* harness_init for the crash tests: example.test routed to 127.0.0.1:port
 * with at most max_connections, and tarryd started and stopped once so the
 * spool exists before messages are spooled into it. */
void harness_init_routed(struct harness *h, unsigned port, int max_connections);
/* Lay the spool out as tmpfiles.d does (harness_start does it first). */
void harness_layout_spool(struct harness *h);
/* Lay the spool out and fill it with n messages by bench/spool-gen, each
 * deferred an hour (to destinations of its own), owned by the daemon user. */
void harness_spool_deferred(struct harness *h, int n);
/* Rewrite tarry.conf with the given full text (for reload tests). */
void harness_write_config(struct harness *h, const char *text);
void harness_start(struct harness *h);
/* Send sig and wait up to timeout_ms; returns the exit status (or -1 on timeout). */
int harness_stop(struct harness *h, int sig, int timeout_ms);
void harness_kill9(struct harness *h);
/* Remove the temp dir (tarryd must be stopped); unmounts the spool's tmpfs. */
void harness_cleanup(struct harness *h);
/* Is tarryd still running (it has not exited)? */
bool harness_running(struct harness *h);

/* Put spool/ on a tmpfs of `size` bytes ("8m"), mounted in a mount namespace
 * of this test process's own, so the mount disappears with the process even
 * if the test dies before harness_cleanup. Needs CAP_SYS_ADMIN, or else
 * unprivileged user namespaces (the process then becomes root in a user
 * namespace of its own). 0, or a negative errno with *how saying what failed;
 * on success *how says which way it worked. Call before harness_start. */
int harness_spool_on_tmpfs(struct harness *h, const char *size, const char **how);
/* Become root of a new user namespace (with a mount namespace), where an
 * unprivileged process may mount a tmpfs. The kernel allows it only while
 * the process has one thread: call it from main() before Criterion starts
 * (its worker processes inherit it). 0 or a negative errno. */
int harness_enter_user_namespace(void);
/* Fill the spool's filesystem: write spool/filler until ENOSPC. Returns the
 * bytes written (fails the test if the write stops for another reason). */
long long harness_fill_spool(struct harness *h);
/* Fill it, then give free_bytes back (rounded up to whole pages): a disk
 * with room for a small write but not a larger one. Returns the filler's size. */
long long harness_fill_spool_but(struct harness *h, long long free_bytes);
/* Remove the filler: the space is back. */
void harness_unfill_spool(struct harness *h);

/* Start sendmail with args (NULL-terminated); *stdin_fd is the write end of
 * its stdin, stderr goes to err_path (NULL: the test's). Returns its pid. */
pid_t harness_sendmail_start(struct harness *h, const char *const *args, const char *err_path,
                             int *stdin_fd);
/* Run sendmail with args (NULL-terminated) and body on stdin; returns its exit code. */
int harness_sendmail(struct harness *h, const char *body, const char *const *args);
/* Likewise, with its stderr returned in *err (malloc'd). */
int harness_sendmail_err(struct harness *h, const char *body, const char *const *args, char **err);
/* A message that shows at the receiver whether it arrived whole (for kill
 * tests): "X-Kill: n", `lines` numbered lines, "END n"; malloc'd. */
char *harness_numbered_message(int n, int lines, size_t *len);
/* Read a saved body: its number n (-1: no X-Kill header), how many numbered
 * lines it holds in order, and whether "END n" is there. */
int harness_numbered_read(const char *path, int *lines, bool *ended);
/* A simple message from sender to one recipient; fails the test unless sendmail exits 0. */
void harness_send(struct harness *h, const char *sender, const char *rcpt, const char *subject);

/* Run another tarryd -C conf (as root, or as the daemon user), at most
 * timeout_ms: its exit code (-1 if it was still running and had to be
 * killed), its stderr in err. */
int harness_run_tarryd(struct harness *h, const char *conf, bool as_daemon, int timeout_ms,
                       char *err, size_t errlen);
/* Run tarryq -C conf ARGS…; stdout and stderr come back in malloc'd strings. */
int harness_tarryq(struct harness *h, const char *const *args, char **out, char **err);
/* The same as the user uid (its own uid as group, no supplementary groups);
 * (uid_t)-1 runs it as the test does. Exits 126 if the switch fails. */
int harness_tarryq_as(struct harness *h, uid_t uid, const char *const *args, char **out,
                      char **err);

/* GET path from the loopback status endpoint (HTTP/1.0): the whole response,
 * headers and body, malloc'd. */
char *harness_http_get(struct harness *h, const char *path);
/* The value of one series of /metrics ("name{label=\"v\"}"), 0 if absent. */
long harness_metric(struct harness *h, const char *series);

/* Files in spool/DIR that are queue IDs. */
size_t harness_count_queued(struct harness *h, const char *dir);
/* How many lines of tarryd's log contain needle? */
size_t harness_log_count(struct harness *h, const char *needle);
/* Does tarryd's log contain needle? */
bool harness_log_contains(struct harness *h, const char *needle);
/* Wait (at most timeout_ms) until count lines of tarryd's log contain needle;
 * whether they do. */
bool harness_wait_log(struct harness *h, const char *needle, size_t count, int timeout_ms);
/* Path of a built binary: "daemon/tarryd", "cli/sendmail", "cli/tarryq". */
const char *harness_binary(const char *rel);

int64_t harness_now_us(void);
void harness_sleep_ms(int ms);

#endif
