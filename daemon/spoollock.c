/* daemon/spoollock.c — taking the spool's lock at start; see spoollock.h. */
#include "daemon/spoollock.h"

#include "common/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define POLL_FIRST_US 5000   /* a spawn's child usually lets go within ms */
#define POLL_MAX_US   100000 /* then poll no more often than this */

/* A process's name and parent from /proc/PID/stat; 0 or -1 (gone). */
static int proc_name(pid_t pid, char *name, size_t len, pid_t *ppid)
{
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (!open || !close || close < open)
                return -1;
        snprintf(name, len, "%.*s", (int)(close - open - 1), open + 1);
        int p = 0;
        *ppid = sscanf(close + 1, " %*c %d", &p) == 1 ? (pid_t)p : 0;
        return 0;
}

/* Is pid a running tarryd, other than this process? */
static bool tarryd_running(pid_t pid)
{
        char name[64];
        pid_t ppid;
        return pid > 0 && pid != getpid() && proc_name(pid, name, sizeof(name), &ppid) == 0 &&
               strcmp(name, "tarryd") == 0;
}

static bool holds(const char *fd_dir, const struct stat *lock)
{
        DIR *d = opendir(fd_dir);
        if (!d)
                return false; /* another user's, or gone */
        bool found = false;
        struct dirent *e;
        while (!found && (e = readdir(d))) {
                struct stat st;
                found = e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
                        st.st_dev == lock->st_dev && st.st_ino == lock->st_ino;
        }
        closedir(d);
        return found;
}

/* Name the processes (of this user, the only ones /proc shows us) that have
 * the lock file open, into out. */
static void find_holders(const char *spool, char *out, size_t len)
{
        char path[4096];
        struct stat lock;
        out[0] = '\0';
        snprintf(path, sizeof(path), "%s/state/%s", spool, QUEUE_LOCK_FILE);
        if (lstat(path, &lock) < 0 || !S_ISREG(lock.st_mode))
                return;
        DIR *proc = opendir("/proc");
        if (!proc)
                return;
        size_t used = 0;
        struct dirent *e;
        while ((e = readdir(proc)) && used + 1 < len) {
                char *end;
                long pid = strtol(e->d_name, &end, 10);
                if (pid <= 0 || *end || pid == getpid())
                        continue;
                snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
                char name[64] = "?";
                pid_t ppid = 0;
                if (!holds(path, &lock) || proc_name((pid_t)pid, name, sizeof(name), &ppid) < 0)
                        continue;
                int n = snprintf(out + used, len - used, "%spid %ld (%s, parent %d)",
                                 used ? ", " : "", pid, name, (int)ppid);
                used = n > 0 ? used + (size_t)n : len;
        }
        closedir(proc);
}

int spool_lock_take(struct queue *q, const char *spool, int64_t wait_us,
                    struct spool_lock_report *rep)
{
        *rep = (struct spool_lock_report){0};
        int64_t start = now_monotonic_us(), poll = POLL_FIRST_US;
        for (;;) {
                pid_t named = 0;
                int r = queue_lock(q, &named);
                rep->waited_us = now_monotonic_us() - start;
                if (r != -EBUSY)
                        return r;
                rep->named = named;
                rep->named_running = tarryd_running(named);
                if (rep->named_running)
                        return -EBUSY;
                bool last = rep->waited_us >= wait_us;
                if (!rep->holders[0] || last) /* who held it at first; at the end, who still does */
                        find_holders(spool, rep->holders, sizeof(rep->holders));
                if (last)
                        return -EBUSY;
                rep->waited = true;
                struct timespec ts = {0, (long)poll * 1000};
                nanosleep(&ts, NULL);
                poll = poll * 2 > POLL_MAX_US ? POLL_MAX_US : poll * 2;
        }
}
