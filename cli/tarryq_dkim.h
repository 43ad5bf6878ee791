/* cli/tarryq_dkim.h — `tarryq dkim-keygen`: a DKIM key and the record to publish.
 *
 *   tarryq [-C FILE] dkim-keygen DOMAIN SELECTOR [--ed25519]
 * writes DIR/dkim/SELECTOR.DOMAIN.key (DIR: the config file's folder; mode
 * 0600, owned by tarry's user when run as root; never overwrites), and
 * prints the TXT record to publish at SELECTOR._domainkey.DOMAIN and the
 * [dkim] line for tarry.conf. RSA 2048 bits by default.
 * Exit codes: 0; 64 usage; 73 the key file exists or cannot be made; 78
 * configuration.
 */
#ifndef TARRY_CLI_TARRYQ_DKIM_H
#define TARRY_CLI_TARRYQ_DKIM_H

/* argv[0] is "dkim-keygen"; config: -C, or NULL. */
int tarryq_dkim_keygen_main(const char *config, int argc, char **argv);

#endif
