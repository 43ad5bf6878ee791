/* tests/queue/spool_fixture.h — the spool each queue test runs on: made
 * fresh in /tmp before the test, removed after it, and the number of
 * entries in one of its folders. Header-only; one test program includes it.
 */
#pragma once

#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

static char spool[256];
static struct queue *q;

/* A new spool /tmp/tarry-NAME-XXXXXX, laid out and open in q. */
static inline void spool_fixture_open(const char *name)
{
        snprintf(spool, sizeof(spool), "/tmp/tarry-%s-XXXXXX", name);
        cr_assert_not_null(mkdtemp(spool));
        cr_assert_eq(queue_open(spool, QUEUE_OPEN_CREATE, &q), 0);
}

static inline int spool_fixture_rm_entry(const char *path, const struct stat *st, int flag,
                                         struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

/* q closed, the spool and everything in it removed. */
static inline void spool_fixture_close(void)
{
        queue_close(q);
        q = NULL;
        nftw(spool, spool_fixture_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The entries in the spool's folder sub ("tmp", "incoming", …). */
static inline int count_entries(const char *sub)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", spool, sub);
        DIR *d = opendir(path);
        cr_assert_not_null(d, "cannot open %s", path);
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}
