/* smtpc/slots.h — concurrency slots shared by smtpc and the pool (private).
 *
 * Counts attempts holding a slot, globally and per key ("source|destination"),
 * and answers whether one more may start under max_connections and
 * destination_concurrency. Waiting requests stay with the caller (FIFO).
 */
#ifndef TARRY_SMTPC_SLOTS_H
#define TARRY_SMTPC_SLOTS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "smtpc/smtpc.h"

#define SLOTS_KEY_MAX (SMTPC_DEST_MAX + 72) /* source address, '|', route key */

struct slot_count;

struct slots {
        struct slot_count *head; /* keys with at least one active attempt */
        size_t active;           /* attempts holding a slot */
};

/* "source|destination" into key (SLOTS_KEY_MAX bytes); source may be NULL. */
void slots_key(char *key, const char *source, const char *destination);

/* Whether one more attempt with this key may start under cfg's limits. */
bool slots_free(const struct slots *s, const struct tarry_config *cfg, const char *key);

/* Take / give back a slot. slots_take: 0 or -ENOMEM. */
int slots_take(struct slots *s, const char *key);
void slots_release(struct slots *s, const char *key);

/* Attempts active for key. */
int slots_active(const struct slots *s, const char *key);

void slots_clear(struct slots *s);

/* The limits with their defaults (100 global, 20 per destination). */
int slots_max_global(const struct tarry_config *cfg);
int slots_max_per_destination(const struct tarry_config *cfg);

#endif
