/* smtpc/slots.c — global and per-destination concurrency counts; see slots.h. */
#include "smtpc/slots.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct slot_count {
        char *key;
        int active;
        struct slot_count *next;
};

void slots_key(char *key, const char *source, const char *destination)
{
        snprintf(key, SLOTS_KEY_MAX, "%s|%s", source ? source : "", destination);
}

int slots_max_global(const struct tarry_config *cfg)
{
        return cfg->max_connections > 0 ? cfg->max_connections : 100;
}

int slots_max_per_destination(const struct tarry_config *cfg)
{
        return cfg->destination_concurrency > 0 ? cfg->destination_concurrency : 20;
}

static struct slot_count *find(const struct slots *s, const char *key)
{
        for (struct slot_count *d = s->head; d; d = d->next)
                if (strcmp(d->key, key) == 0)
                        return d;
        return NULL;
}

int slots_active(const struct slots *s, const char *key)
{
        const struct slot_count *d = find(s, key);
        return d ? d->active : 0;
}

bool slots_free(const struct slots *s, const struct tarry_config *cfg, const char *key)
{
        if (s->active >= (size_t)slots_max_global(cfg))
                return false;
        return slots_active(s, key) < slots_max_per_destination(cfg);
}

int slots_take(struct slots *s, const char *key)
{
        struct slot_count *d = find(s, key);
        if (!d) {
                d = calloc(1, sizeof(*d));
                if (!d || !(d->key = strdup(key))) {
                        free(d);
                        return -ENOMEM;
                }
                d->next = s->head;
                s->head = d;
        }
        d->active++;
        s->active++;
        return 0;
}

void slots_release(struct slots *s, const char *key)
{
        for (struct slot_count **pp = &s->head; *pp; pp = &(*pp)->next) {
                struct slot_count *d = *pp;
                if (strcmp(d->key, key) != 0)
                        continue;
                s->active--;
                if (--d->active <= 0) {
                        *pp = d->next;
                        free(d->key);
                        free(d);
                }
                return;
        }
}

void slots_clear(struct slots *s)
{
        while (s->head) {
                struct slot_count *d = s->head;
                s->head = d->next;
                free(d->key);
                free(d);
        }
        s->active = 0;
}
