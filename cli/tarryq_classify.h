/* cli/tarryq_classify.h — `tarryq classify`: ask the scheduler's classifier.
 *
 *   tarryq classify [-C FILE] 'REPLY TEXT'   class, hint and matching rule
 *   tarryq classify [-C FILE] --jsonl        JSON lines with a "reply" field on
 *                                            stdin → {"class","hint_seconds","rule"}
 * Same code path as tarryd: the compiled-in rules plus the operator rules of
 * the config key classifier_rules. Exit codes: 0; 64 usage; 65 a bad input
 * line (--jsonl; the other lines are still answered); 78 configuration.
 */
#ifndef TARRY_CLI_TARRYQ_CLASSIFY_H
#define TARRY_CLI_TARRYQ_CLASSIFY_H

/* argv[0] is "classify". */
int tarryq_classify_main(int argc, char **argv);

#endif
