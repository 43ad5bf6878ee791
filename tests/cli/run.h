/* tests/cli/run.h — run the built binaries against a temporary spool and config. */
#ifndef TARRY_TESTS_CLI_RUN_H
#define TARRY_TESTS_CLI_RUN_H

#include <stddef.h>
#include <sys/types.h>

struct run_result {
        int status; /* exit code, or 128+signal */
        char *out;
        size_t out_len;
        char *err;
};

struct run_opts {
        const char *input; /* stdin bytes (NULL: empty) */
        size_t input_len;  /* 0: strlen(input) */
        long fsize_limit;  /* >0: RLIMIT_FSIZE in the child */
        const char *argv0; /* name to run the binary under (mailq) */
};

/* A fresh directory with spool/ (created) and tarry.conf (written from extra_conf). */
struct fixture {
        char dir[256];
        char spool[300];
        char conf[300];
};

void fixture_setup(struct fixture *f, const char *extra_main);
void fixture_teardown(struct fixture *f);
/* The path of a built binary: $TARRY_BUILD_DIR/cli/name. */
const char *bin(const char *name);
/* Run argv (NULL-terminated; argv[0] is the binary path) with TZ=UTC. */
struct run_result run(const struct run_opts *o, char *const argv[]);
void run_free(struct run_result *r);
/* Number of entries in spool/sub. */
int spool_count(const struct fixture *f, const char *sub);
/* Contents of spool/sub/<the only message>/file (NULL if there is no single message). */
char *spool_file(const struct fixture *f, const char *sub, const char *file);
char *read_whole(const char *path, size_t *len);
void write_file(const char *path, const char *text);

#endif
