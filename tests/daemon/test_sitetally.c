/* tests/daemon/test_sitetally.c — /status's per-site counts (daemon/sitetally.h)
 * kept as works are added and dropped: after any sequence they are what a
 * count of the works themselves (the walk /status used to make) says. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sitetally.h"

#define N_MSG   40
#define N_SITES 4
#define N_ROUTE 6
#define MAX_W   4

/* A model: each message's works, as (site, route) indices; -1: free slot. */
struct model {
        int site[N_MSG][MAX_W], route[N_MSG][MAX_W];
};

static const char *site_name(int s)
{
        static const char *names[N_SITES] = {"gmail", "[10.0.0.1]:25", "mx.a.test", "outlook"};
        return names[s];
}

static const char *route_name(int r)
{
        static const char *names[N_ROUTE] = {"mx:a.test",     "mx:b.test", "mx:c.test",
                                             "[10.0.0.1]:25", "mx:d.test", "mx:A.test"};
        return names[r];
}

static bool other_at(const struct model *m, int msg, int slot, int site)
{
        for (int k = 0; k < MAX_W; k++)
                if (k != slot && m->site[msg][k] == site)
                        return true;
        return false;
}

struct seen {
        size_t domains[N_SITES], messages[N_SITES];
        int n;
        bool bad;
};

static int site_index(const char *name)
{
        for (int s = 0; s < N_SITES; s++)
                if (strcmp(site_name(s), name) == 0)
                        return s;
        return -1;
}

static int seen_cb(const char *site, size_t domains, size_t messages, void *ud)
{
        struct seen *v = ud;
        int s = site_index(site);
        if (s < 0 || v->messages[s] || v->domains[s]) /* unknown, or listed twice */
                v->bad = true;
        else {
                v->domains[s] = domains;
                v->messages[s] = messages;
        }
        v->n++;
        return 0;
}

static void check(const struct site_tally *t, const struct model *m, int step)
{
        size_t messages[N_SITES] = {0}, domains[N_SITES] = {0};
        int sites = 0;
        for (int s = 0; s < N_SITES; s++) {
                bool dom[N_ROUTE] = {false};
                for (int i = 0; i < N_MSG; i++) {
                        bool here = false;
                        for (int k = 0; k < MAX_W; k++)
                                if (m->site[i][k] == s) {
                                        here = true;
                                        /* "mx:" is not part of a domain: the
                                         * routes' domains, as /status names them */
                                        dom[m->route[i][k]] = true;
                                }
                        messages[s] += here;
                }
                for (int r = 0; r < N_ROUTE; r++)
                        domains[s] += dom[r];
                sites += messages[s] > 0;
        }
        struct seen v = {0};
        site_tally_foreach(t, seen_cb, &v);
        cr_assert(!v.bad, "step %d: a site listed twice or unknown", step);
        cr_assert_eq(v.n, sites, "step %d: %d sites listed, %d have works", step, v.n, sites);
        cr_assert_eq(site_tally_count(t), (size_t)sites, "step %d", step);
        for (int s = 0; s < N_SITES; s++) {
                cr_assert_eq(v.messages[s], messages[s], "step %d, %s: %zu messages, want %zu",
                             step, site_name(s), v.messages[s], messages[s]);
                cr_assert_eq(v.domains[s], domains[s], "step %d, %s: %zu domains, want %zu", step,
                             site_name(s), v.domains[s], domains[s]);
        }
}

Test(sitetally, counts_stay_what_the_works_say_through_any_adds_and_drops)
{
        struct site_tally *t;
        cr_assert_eq(site_tally_new(&t), 0);
        struct model m;
        memset(m.site, -1, sizeof(m.site));
        memset(m.route, -1, sizeof(m.route));
        srand(19);
        for (int step = 0; step < 20000; step++) {
                int i = rand() % N_MSG, k = rand() % MAX_W;
                if (m.site[i][k] >= 0) { /* drop it, as deliver.c does before its item goes */
                        int s = m.site[i][k];
                        site_tally_drop(t, site_name(s), route_name(m.route[i][k]),
                                        !other_at(&m, i, k, s));
                        m.site[i][k] = m.route[i][k] = -1;
                } else {
                        int s = rand() % N_SITES, r = rand() % N_ROUTE;
                        cr_assert_eq(
                            site_tally_add(t, site_name(s), route_name(r), !other_at(&m, i, k, s)),
                            0);
                        m.site[i][k] = s;
                        m.route[i][k] = r;
                }
                if (step % 97 == 0)
                        check(t, &m, step);
        }
        check(t, &m, -1);
        site_tally_free(t);
}

Test(sitetally, an_mx_route_counts_its_domain_and_another_route_its_own_key)
{
        struct site_tally *t;
        cr_assert_eq(site_tally_new(&t), 0);
        cr_assert_eq(site_tally_add(t, "gmail", "mx:a.test", true), 0);
        cr_assert_eq(site_tally_add(t, "gmail", "mx:b.test", false), 0); /* same message */
        cr_assert_eq(site_tally_add(t, "gmail", "mx:a.test", true), 0);  /* another one */
        /* a relayhost: its route is its site's key, and counts as one domain */
        cr_assert_eq(site_tally_add(t, "[10.0.0.1]:25", "[10.0.0.1]:25", true), 0);
        cr_assert_eq(site_tally_add(t, "[10.0.0.1]:25", "[10.0.0.1]:25", true), 0);
        struct seen v = {0};
        site_tally_foreach(t, seen_cb, &v);
        cr_assert_not(v.bad);
        cr_assert_eq(v.n, 2);
        cr_assert_eq(v.domains[0], 2);
        cr_assert_eq(v.messages[0], 2);
        cr_assert_eq(v.domains[1], 1);
        cr_assert_eq(v.messages[1], 2);
        site_tally_drop(t, "[10.0.0.1]:25", "[10.0.0.1]:25", true);
        site_tally_drop(t, "[10.0.0.1]:25", "[10.0.0.1]:25", true);
        site_tally_drop(t, "gmail", "mx:a.test", true);
        site_tally_drop(t, "gmail", "mx:b.test", false);
        site_tally_drop(t, "gmail", "mx:a.test", true);
        cr_assert_eq(site_tally_count(t), 0, "a site with nothing waiting is still listed");
        site_tally_free(t);
}
