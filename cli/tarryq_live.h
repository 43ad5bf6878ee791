/* cli/tarryq_live.h — tarryq talking to the running tarryd (status endpoint).
 *
 * Listings ask the daemon and fall back to the spool, saying so on stderr,
 * when it does not answer. Admin actions: f flush, i retry ID, d delete,
 * h hold, H release (ID or ALL). Each returns a sysexits(3) code.
 */
#ifndef TARRY_CLI_TARRYQ_LIVE_H
#define TARRY_CLI_TARRYQ_LIVE_H

#include <stdbool.h>

int tarryq_list(const char *config_path, bool json);
/* force: -i ID --force, past a suspension. -i on a message whose every
 * destination is suspended says so and returns EX_TEMPFAIL. -f says how many
 * destinations stay suspended. */
int tarryq_admin(const char *config_path, char action, const char *target, bool force);
/* tarryq resume DESTINATION: lift its suspension or back-off now. */
int tarryq_resume(const char *config_path, const char *destination);
int tarryq_status(const char *config_path, bool fleet);

#endif
