/* cli/tarryq_sender.h — `tarryq check-sender`: does DNS say what receivers
 * want to see of this sender (sendercheck/sendercheck.h)?
 *
 *   tarryq [-C FILE] check-sender
 * reads the config, asks DNS, changes nothing; prints one line per check,
 * "pass" or "FAIL", and under each failure the record to publish.
 * Exit codes: 0 every check passed; 1 one or more failed; 64 usage; 69 DNS
 * could not be set up; 78 configuration.
 */
#ifndef TARRY_CLI_TARRYQ_SENDER_H
#define TARRY_CLI_TARRYQ_SENDER_H

/* argv[0] is "check-sender"; config: -C, or NULL. */
int tarryq_check_sender_main(const char *config, int argc, char **argv);

#endif
