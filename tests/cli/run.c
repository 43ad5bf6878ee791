/* tests/cli/run.c — see run.h. */
#include "run.h"
#include "queue/msgfile.h"
#include "queue/queue.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f, "cannot write %s", path);
        fputs(text, f);
        fclose(f);
}

char *read_whole(const char *path, size_t *len)
{
        FILE *f = fopen(path, "r");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t n = 0, cap = 0;
        int c;
        while ((c = fgetc(f)) != EOF) {
                if (n + 2 > cap)
                        buf = realloc(buf, cap = cap * 2 + 4096);
                buf[n++] = (char)c;
        }
        fclose(f);
        if (!buf)
                buf = calloc(1, 1);
        buf[n] = '\0';
        if (len)
                *len = n;
        return buf;
}

void fixture_setup(struct fixture *f, const char *extra_main)
{
        snprintf(f->dir, sizeof(f->dir), "/tmp/tarry-cli-test-XXXXXX");
        cr_assert_not_null(mkdtemp(f->dir));
        snprintf(f->spool, sizeof(f->spool), "%s/spool", f->dir);
        snprintf(f->conf, sizeof(f->conf), "%s/tarry.conf", f->dir);
        struct queue *q = NULL;
        cr_assert_eq(queue_open(f->spool, QUEUE_OPEN_CREATE, &q), 0);
        queue_close(q);
        char text[2048];
        snprintf(
            text, sizeof(text),
            "[main]\nspool_dir = %s\nmyhostname = mail.example.com\nmyorigin = example.com\n%s",
            f->spool, extra_main ? extra_main : "");
        write_file(f->conf, text);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        chmod(path, 0700);
        return remove(path);
}

void fixture_teardown(struct fixture *f)
{
        nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *bin(const char *name)
{
        static char path[512];
        const char *dir = getenv("TARRY_BUILD_DIR");
        cr_assert_not_null(dir, "TARRY_BUILD_DIR is not set (run through meson test)");
        snprintf(path, sizeof(path), "%s/cli/%s", dir, name);
        return path;
}

static int temp_fd(char *path)
{
        strcpy(path, "/tmp/tarry-run-XXXXXX");
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        return fd;
}

struct run_result run(const struct run_opts *o, char *const argv[])
{
        static const struct run_opts none;
        if (!o)
                o = &none;
        char in_path[64], out_path[64], err_path[64];
        int in = temp_fd(in_path), out = temp_fd(out_path), err = temp_fd(err_path);
        if (o->input) {
                size_t n = o->input_len ? o->input_len : strlen(o->input);
                cr_assert_eq(write(in, o->input, n), (ssize_t)n);
                lseek(in, 0, SEEK_SET);
        }
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                dup2(in, 0), dup2(out, 1), dup2(err, 2);
                setenv("TZ", "UTC", 1);
                unsetenv("TARRY_CONFIG");
                if (o->fsize_limit > 0) {
                        struct rlimit rl = {o->fsize_limit, o->fsize_limit};
                        setrlimit(RLIMIT_FSIZE, &rl);
                }
                char *args[64];
                size_t i = 0;
                for (; argv[i] && i < 63; i++)
                        args[i] = argv[i];
                args[i] = NULL;
                const char *path = argv[0];
                if (o->argv0)
                        args[0] = (char *)o->argv0;
                execv(path, args);
                _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        struct run_result r = {0};
        r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        r.out = read_whole(out_path, &r.out_len);
        r.err = read_whole(err_path, NULL);
        close(in), close(out), close(err);
        unlink(in_path), unlink(out_path), unlink(err_path);
        return r;
}

void run_free(struct run_result *r)
{
        free(r->out);
        free(r->err);
}

int spool_count(const struct fixture *f, const char *sub)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", f->spool, sub);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

/* "body" or "envelope" of a message file (queue/msgfile.h: body, envelope,
 * trailer), read as the bytes on disk; NULL when the file is not laid out so. */
static char *message_file_part(const char *path, const char *part)
{
        size_t len = 0;
        char *all = read_whole(path, &len);
        char id[QUEUE_ID_LEN + 1];
        unsigned long long body_len = 0, env_len = 0;
        char *out = NULL;
        if (all && len >= MSGFILE_TRAILER_LEN &&
            sscanf(all + len - MSGFILE_TRAILER_LEN, MSGFILE_MAGIC "%16s %20llu %10llu", id,
                   &body_len, &env_len) == 3 &&
            body_len + env_len + MSGFILE_TRAILER_LEN == len) {
                bool body = strcmp(part, "body") == 0;
                size_t n = body ? body_len : env_len;
                const char *from = all + (body ? 0 : body_len);
                if ((out = malloc(n + 1))) {
                        memcpy(out, from, n);
                        out[n] = '\0';
                }
        }
        free(all);
        return out;
}

char *spool_file(const struct fixture *f, const char *sub, const char *file)
{
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", f->spool, sub);
        DIR *d = opendir(path);
        if (!d)
                return NULL;
        struct dirent *de;
        char id[256] = "";
        int n = 0;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        snprintf(id, sizeof(id), "%s", de->d_name);
                        n++;
                }
        closedir(d);
        if (n != 1)
                return NULL;
        snprintf(path, sizeof(path), "%s/%s/%s", f->spool, sub, id);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
                return message_file_part(path, file);
        snprintf(path, sizeof(path), "%s/%s/%s/%s", f->spool, sub, id, file);
        return read_whole(path, NULL);
}
