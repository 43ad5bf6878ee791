/* cli/tarryq_classify.h — `tarryq classify`: ask the scheduler's classifier.
 *
 *   tarryq classify [-C FILE] 'REPLY TEXT'   class, hint and matching rule
 *   tarryq classify [-C FILE] --jsonl        JSON lines with a "reply" field on
 *                                            stdin → {"class","hint_seconds","rule"}
 *   tarryq rules check [-C FILE] POLICY     validate a policy file
 * Same code path as tarryd: the shipped policy file (config key policy_file)
 * plus the operator's (classifier_rules); the answer names the rule that
 * matched and its file. `rules check` layers POLICY on the shipped file (or
 * checks it alone when it is the shipped file) and names file and entry of
 * the first error. Exit codes: 0; 64 usage; 65 a bad input line (--jsonl; the
 * other lines are still answered) or an invalid POLICY; 66 POLICY unreadable;
 * 78 configuration (including a broken shipped file).
 */
#ifndef TARRY_CLI_TARRYQ_CLASSIFY_H
#define TARRY_CLI_TARRYQ_CLASSIFY_H

/* argv[0] is "classify". */
int tarryq_classify_main(int argc, char **argv, const char *config_path);
/* argv[0] is "rules". */
int tarryq_rules_main(int argc, char **argv);

#endif
