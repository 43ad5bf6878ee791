/* tests/daemon/test_spool.c — who owns the spool, and how many tarryds use it.
 *
 * tarryd runs as the unit runs it (an unprivileged user, see harness.h);
 * tests about root start it as root. What is checked is what an
 * administrator would see: the mail arrives, the second tarryd says why it
 * will not run and leaves the first one working, a planted link is refused
 * and its target keeps its owner, a fresh spool ends up as the package lays
 * it out. Needs root (skipped otherwise: there is no other user to be).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/fixture/fixture.h"

static struct fixture *start_fixture(void)
{
        struct fixture *f = NULL;
        cr_assert_eq(fixture_new("127.0.0.1", &f), 0);
        cr_assert_eq(fixture_start(f, 0), 0);
        return f;
}

static void init_routed(struct harness *h, struct fixture *f, const char *more)
{
        if (!harness_can_switch_user())
                cr_skip_test("needs root: tarryd runs as " HARNESS_DAEMON_USER);
        char extra[2048];
        snprintf(extra, sizeof(extra),
                 "[smtp]\nconnect_timeout = 2s\ncommand_timeout = 3s\n"
                 "[transport]\nexample.test = [127.0.0.1]:%u\n%s",
                 fixture_port(f), more ? more : "");
        harness_init(h, extra);
}

static bool unix_socket_answers(const char *path)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
        if (ok) {
                const char req[] = "GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n";
                char buf[64] = "";
                ok = write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1 &&
                     read(fd, buf, sizeof(buf) - 1) > 0 && strstr(buf, " 200 ");
        }
        close(fd);
        return ok;
}

static ino_t inode_of(const char *path)
{
        struct stat st;
        cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
        return st.st_ino;
}

Test(spool, a_second_tarryd_on_the_same_spool_exits_75_and_touches_nothing, .timeout = 90)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_routed(&h, f, NULL);
        harness_start(&h);
        char sock[400], abandoned[400], out[4096], want[512];
        snprintf(sock, sizeof(sock), "%s/status.sock", h.dir);
        ino_t sock_ino = inode_of(sock);
        /* a draft whose writer is gone: recovery would remove it */
        snprintf(abandoned, sizeof(abandoned), "%s/tmp/0123456789ABCDEF", h.spool);
        cr_assert_eq(mkdir(abandoned, 0750), 0);
        harness_give(&h, abandoned);

        for (int as_daemon = 0; as_daemon <= 1; as_daemon++) {
                int code = harness_run_tarryd(&h, h.conf, as_daemon, 20000, out, sizeof(out));
                cr_assert_eq(code, 75, "second tarryd (%s): exit %d: %s",
                             as_daemon ? "as its user" : "as root", code, out);
                snprintf(want, sizeof(want), "tarryd: spool %s is in use by tarryd (pid %d)",
                         h.spool, (int)h.tarryd);
                cr_assert(strstr(out, want), "expected '%s' in: %s", want, out);
        }
        cr_assert_eq(inode_of(sock), sock_ino, "the running tarryd's socket was replaced");
        cr_assert(unix_socket_answers(sock), "the running tarryd's socket no longer answers");
        cr_assert_eq(access(abandoned, F_OK), 0, "the second tarryd ran recovery on tmp/");
        cr_assert(harness_running(&h));

        harness_send(&h, "alice@sender.test", "bob@example.test", "still served");
        cr_assert_eq(fixture_wait_txns(f, 1, 20000), 0, "the first tarryd stopped delivering");
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        cr_assert_neq(access(sock, F_OK), 0, "the socket is removed at stop");
        harness_cleanup(&h);
        fixture_free(f);
}

Test(spool, a_socket_another_tarryd_accepts_on_is_not_unlinked, .timeout = 90)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_routed(&h, f, NULL);
        harness_start(&h);
        char sock[400], conf[400], spool2[400], text[1024], out[4096];
        snprintf(sock, sizeof(sock), "%s/status.sock", h.dir);
        ino_t sock_ino = inode_of(sock);
        /* another spool, the same socket path: a copy-paste of the config */
        snprintf(conf, sizeof(conf), "%s/other.conf", h.dir);
        snprintf(spool2, sizeof(spool2), "%s/spool2", h.dir);
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nstatus_listen = unix:%s\n",
                 spool2, sock);
        FILE *c = fopen(conf, "w");
        fputs(text, c);
        fclose(c);
        chmod(conf, 0644);
        int code = harness_run_tarryd(&h, conf, true, 20000, out, sizeof(out));
        cr_assert_eq(code, 69, "exit %d: %s", code, out);
        cr_assert(strstr(out, "address in use"), "%s", out);
        cr_assert_eq(inode_of(sock), sock_ino, "the running tarryd's socket was replaced");
        cr_assert(unix_socket_answers(sock), "the running tarryd's socket no longer answers");
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(spool, a_status_port_in_use_is_reported_as_in_use, .timeout = 60)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_routed(&h, f, NULL);
        int busy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(sa);
        cr_assert_eq(bind(busy, (struct sockaddr *)&sa, sizeof(sa)), 0);
        cr_assert_eq(listen(busy, 1), 0);
        cr_assert_eq(getsockname(busy, (struct sockaddr *)&sa, &len), 0);
        char text[1024], out[4096];
        snprintf(text, sizeof(text),
                 "[main]\nspool_dir = %s\nmyhostname = tarry.test\nstatus_listen = 127.0.0.1:%u\n",
                 h.spool, (unsigned)ntohs(sa.sin_port));
        harness_write_config(&h, text);
        harness_layout_spool(&h);
        int code = harness_run_tarryd(&h, h.conf, true, 20000, out, sizeof(out));
        cr_assert_eq(code, 69, "exit %d: %s", code, out);
        cr_assert(strstr(out, "address in use"), "%s", out);
        cr_assert_null(strstr(out, "expected unix:/path"), "%s", out);
        close(busy);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(spool, roots_mail_is_delivered_by_tarryd_running_as_its_user, .timeout = 90)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_routed(&h, f, NULL);
        harness_start(&h);
        harness_send(&h, "root@tarry.test", "bob@example.test", "from cron");
        cr_assert_eq(fixture_wait_txns(f, 1, 20000), 0, "root's mail was not delivered");
        for (int i = 0; i < 2000 && harness_count_queued(&h, "active") > 0; i++)
                harness_sleep_ms(10);
        cr_assert_eq(harness_count_queued(&h, "active"), 0, "delivered but not removed");
        cr_assert_eq(harness_count_queued(&h, "incoming"), 0);
        cr_assert_not(harness_log_contains(&h, "Permission denied"));
        cr_assert_eq(fixture_txn_count(f), 1, "delivered more than once");
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

static void assert_owned(const struct harness *h, const char *name, uid_t uid, gid_t gid,
                         mode_t mode)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", h->spool, name);
        struct stat st;
        cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
        cr_assert_eq(st.st_uid, uid, "%s: owner %u, not %u", name, (unsigned)st.st_uid,
                     (unsigned)uid);
        cr_assert_eq(st.st_gid, gid, "%s: group %u, not %u", name, (unsigned)st.st_gid,
                     (unsigned)gid);
        if (mode)
                cr_assert_eq(st.st_mode & 07777, mode, "%s: mode %o, not %o", name,
                             st.st_mode & 07777, mode);
}

Test(spool, started_as_root_on_a_fresh_spool_it_gives_every_folder_to_its_user, .timeout = 90)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_routed(&h, f, NULL);
        struct passwd *pw = getpwnam(HARNESS_DAEMON_USER);
        struct group *drop = getgrnam(HARNESS_DROP_GROUP);
        cr_assert(pw && drop);
        uid_t uid = pw->pw_uid;
        gid_t gid = pw->pw_gid, drop_gid = drop->gr_gid;
        h.as_root = true; /* the config says user = HARNESS_DAEMON_USER */
        harness_start(&h);
        static const char *const private[] = {"tmp",  "incoming", "active",
                                              "hold", "corrupt",  "state"};
        for (size_t i = 0; i < sizeof(private) / sizeof(private[0]); i++)
                assert_owned(&h, private[i], uid, gid, 0);
        assert_owned(&h, "maildrop", uid, drop_gid, 01730);
        assert_owned(&h, "state/tarryd.lock", uid, gid, 0);
        harness_send(&h, "root@tarry.test", "bob@example.test", "after a root start");
        cr_assert_eq(fixture_wait_txns(f, 1, 20000), 0, "not delivered");
        cr_assert_eq(harness_stop(&h, SIGTERM, 10000), 0);
        harness_cleanup(&h);
        fixture_free(f);
}

Test(spool, a_link_planted_at_active_is_refused_and_its_target_keeps_its_owner, .timeout = 60)
{
        struct fixture *f = start_fixture();
        struct harness h;
        init_routed(&h, f, NULL);
        harness_layout_spool(&h); /* the spool as installed, the tarry user's */
        /* what the tarry user could do: replace active/ with a link to root's folder */
        char active[400], target[400], out[4096];
        snprintf(active, sizeof(active), "%s/active", h.spool);
        snprintf(target, sizeof(target), "%s/roots-folder", h.dir);
        cr_assert_eq(mkdir(target, 0700), 0);
        cr_assert_eq(rmdir(active), 0);
        cr_assert_eq(symlink(target, active), 0);
        h.as_root = true;
        int code = harness_run_tarryd(&h, h.conf, false, 20000, out, sizeof(out));
        cr_assert_eq(code, 73, "exit %d: %s", code, out);
        cr_assert(strstr(out, "active is a symbolic link, not a folder: refused"), "%s", out);
        struct stat st;
        cr_assert_eq(stat(target, &st), 0);
        cr_assert_eq(st.st_uid, 0, "the link's target was given to uid %u", (unsigned)st.st_uid);
        cr_assert_eq(st.st_gid, 0);
        harness_cleanup(&h);
        fixture_free(f);
}
