/* tests/scheduler/test_classify.c — the classifier: codes, rules, hints,
 * attempt-level failures, operator rules, hostile input.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/scheduler.h"

static struct sched_classifier *c;

static void setup(void)
{
        cr_assert_eq(sched_classifier_new(&c), 0);
}

static void teardown(void)
{
        sched_classifier_free(c);
}

static struct sched_verdict classify(const char *text)
{
        struct sched_verdict v;
        sched_classify_text(c, text, &v);
        return v;
}

TestSuite(classify, .init = setup, .fini = teardown);

Test(classify, any_5xx_is_permanent_whatever_its_words)
{
        struct sched_verdict v = classify("550 5.7.1 Greylisting in effect, try again later");
        cr_assert_eq(v.cls, CLASS_PERMANENT);
        cr_assert_str_eq(v.rule, "5xx-permanent");
}

Test(classify, a_2xx_is_accepted)
{
        cr_assert(classify("250 2.0.0 Ok: queued as 4F1").accepted);
}

Test(classify, an_unmatched_4xx_is_unknown_temp)
{
        struct sched_verdict v = classify("451 4.7.1 Try again later");
        cr_assert_eq(v.cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(v.hint_s, -1);
}

Test(classify, multi_line_reply_is_parsed_with_code_and_enhanced_code)
{
        struct sched_verdict v =
            classify("450-4.2.1 The user you are trying to contact is receiving mail too "
                     "quickly. Please\r\n450-4.2.1 resend your message at a later time.\r\n450 "
                     "4.2.1 https://support.google.com/mail/?p=ReceivingRate");
        cr_assert_eq(v.code, 450);
        cr_assert_str_eq(v.enhanced, "4.2.1");
        cr_assert_eq(v.cls, CLASS_RATE_LIMIT);
}

Test(classify, enhanced_code_decides_when_the_words_say_nothing)
{
        cr_assert_eq(classify("452 4.2.2 nope").cls, CLASS_MAILBOX_FULL);
        cr_assert_eq(classify("451 4.3.2 nope").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("451 4.4.0 nope").cls, CLASS_ROUTING);
        cr_assert_eq(classify("451 4.7.0 Temporary server error").cls, CLASS_POLICY);
}

Test(classify, a_qmail_style_trailing_enhanced_code_counts_when_none_leads)
{
        /* qmail-smtpd: "451 timeout (#4.4.2)"; the code decides, as a leading one would */
        struct sched_verdict v = classify("451 timeout (#4.4.2)");
        cr_assert_str_eq(v.enhanced, "4.4.2");
        cr_assert_eq(v.cls, CLASS_ROUTING);
        cr_assert_str_eq(classify("451 DNS temporary failure (#4.5.1 - chkuser)").enhanced,
                         "4.5.1");
        /* a leading code (or one smtpc passes) wins; "(#" without a code is text */
        cr_assert_str_eq(classify("451 4.7.1 Greylisted (#4.3.0)").enhanced, "4.7.1");
        struct sched_reply r = {.code = 451, .enhanced = "4.7.1", .text = "Greylisted (#4.3.0)"};
        sched_classify(c, &r, &v);
        cr_assert_str_eq(v.enhanced, "4.7.1");
        cr_assert_eq(v.cls, CLASS_GREYLIST);
        cr_assert_str_eq(classify("451 see ticket (#12) (#4.x.0) (#").enhanced, "");
}

/* shared/README.md's conventions, as the corpus labels them (tests/data/corpus). */
Test(classify, generic_texts_follow_the_enhanced_code_families)
{
        /* 4.3.x is the receiver's own trouble, 4.3.0 included (issue 15's seed
         * example); only a bare "try again later" says nothing */
        cr_assert_eq(classify("451 4.3.0 Mail server temporarily rejected message").cls,
                     CLASS_OVERLOAD);
        cr_assert_eq(classify("451 4.3.0 Temporary lookup failure").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("454 4.3.0 Try again later").cls, CLASS_UNKNOWN_TEMP);
        /* 4.4.x is routing, 4.4.5 too; a stated limit still wins over the code */
        cr_assert_eq(classify("451 4.4.5 nope").cls, CLASS_ROUTING);
        cr_assert_eq(classify("452 4.4.5 Maximum number of messages per session exceeded.").cls,
                     CLASS_RATE_LIMIT);
        /* qmail's trailing code, and its qmail-queue failures */
        cr_assert_eq(classify("451 qq write error or disk full (#4.3.0)").cls, CLASS_OVERLOAD);
}

Test(classify, words_that_name_the_cause_beat_misleading_ones)
{
        /* "too many" errors: the client misbehaved, not a rate */
        cr_assert_eq(classify("421 4.7.0 mx.example.com Error: too many errors").cls, CLASS_POLICY);
        cr_assert_eq(classify("455 4.3.0 Too many authentication errors, disconnecting.").cls,
                     CLASS_POLICY);
        cr_assert_eq(classify("421 4.7.0 Error: too many connections from 192.0.2.1").cls,
                     CLASS_RATE_LIMIT);
        /* the receiver's policy checker failed: its trouble, not a verdict */
        cr_assert_eq(classify("451 4.7.1 Internal error during policy check").cls, CLASS_OVERLOAD);
        /* a quota "limit" of a mailbox is a full mailbox, in German too */
        cr_assert_eq(classify("422 4.2.2 Quota limit exceeded").cls, CLASS_MAILBOX_FULL);
        cr_assert_eq(classify("452 Ihr Postfach ist voll").cls, CLASS_MAILBOX_FULL);
        /* the receiver's own failures and routing trouble in other words */
        cr_assert_eq(classify("452 Space shortage, please try later").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("451 Cannot resolve <bob@example.org> at this time").cls,
                     CLASS_ROUTING);
        cr_assert_eq(classify("450 4.7.1 <bob@example.org>: Recipient address rejected: "
                              "defer_if_permit requested")
                         .cls,
                     CLASS_POLICY);
        /* "temporarily denied" and a bare "try again later" say nothing */
        cr_assert_eq(classify("450 Message denied temporarily").cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(classify("450 4.7.1 Recipient address rejected: Try again later").cls,
                     CLASS_UNKNOWN_TEMP);
}

Test(classify, families_found_in_the_grown_tune_split)
{
        /* X.7.0 with nothing but "try later" says nothing; with words it is
         * still policy (convention 4) */
        cr_assert_eq(classify("454 4.7.0 Try again later.").cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(classify("451 4.7.0 Temporary server error").cls, CLASS_POLICY);
        /* bad recipients are the client's errors, not a rate */
        cr_assert_eq(classify("421 4.7.0 mx.example.net Too many bad recipients").cls,
                     CLASS_POLICY);
        /* the receiver cannot write its own files: its trouble, not "denied" */
        cr_assert_eq(classify("451 cannot create /var/spool/in/x1 (Permission denied)").cls,
                     CLASS_OVERLOAD);
        /* a used-up sending allowance is a sender's limit */
        cr_assert_eq(classify("451 Sending credits exhausted for this account").cls,
                     CLASS_RATE_LIMIT);
        /* a deactivated mailbox is a soft "user unknown" */
        cr_assert_eq(classify("450 <bob@example.org>: account has been deactivated").cls,
                     CLASS_ROUTING);
        /* a gateway that cannot reach the server behind it: routing */
        cr_assert_eq(classify("451 Remote server temporarily unavailable, try later").cls,
                     CLASS_ROUTING);
        /* a client that talks before the greeting broke the protocol */
        cr_assert_eq(classify("421 You talked too soon, wait for the greeting").cls, CLASS_POLICY);
}

Test(classify, named_causes_beat_wrappers_and_vague_words)
{
        /* a requirement or a limit inside a gateway's failure text */
        cr_assert_eq(
            classify("450 4.4.101 Proxy session setup failed: encryption required by peer").cls,
            CLASS_POLICY);
        cr_assert_eq(classify("421 4.3.2 Maximum number of connections exceeded. PRX3").cls,
                     CLASS_RATE_LIMIT);
        /* the receiver's own trouble in other words */
        cr_assert_eq(classify("450 error communicating with address verifier").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("451 Signing failed, try later").cls, CLASS_OVERLOAD);
        /* DNS, protocol, limits and switched-off receiving */
        cr_assert_eq(classify("450 resolver timeout for example.org").cls, CLASS_ROUTING);
        cr_assert_eq(classify("451 Stray LF found in message").cls, CLASS_POLICY);
        cr_assert_eq(classify("452 recipient count exceeds 50 for this session").cls,
                     CLASS_RATE_LIMIT);
        cr_assert_eq(classify("450 Outbound traffic quota used up").cls, CLASS_RATE_LIMIT);
        cr_assert_eq(classify("451 Inbound mail is disabled for this domain").cls, CLASS_ROUTING);
        /* a message the receiver could not store; data sent out of turn */
        cr_assert_eq(classify("452 Message could not be saved, try later").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("421 Excessive input sent to server, closing").cls, CLASS_POLICY);
}

Test(classify, provider_codes_beat_misleading_words)
{
        cr_assert_eq(classify("451 4.7.650 The mail server [1.2.3.4] has been temporarily rate "
                              "limited due to IP reputation")
                         .cls,
                     CLASS_REPUTATION);
        cr_assert_eq(classify("421 4.7.28 unusual rate").cls, CLASS_RATE_LIMIT);
        cr_assert_eq(classify("421 4.7.30 Your email has been rate limited because DKIM").cls,
                     CLASS_POLICY);
        cr_assert_eq(classify("421 4.7.500 Server busy, please try again later").cls,
                     CLASS_OVERLOAD);
}

Test(classify, a_block_list_is_reputation_even_when_the_service_is_unavailable)
{
        /* a 5xx greeting deferred by smtpc: the words say why, not the code */
        cr_assert_eq(classify("454 4.7.1 host mx.example[192.0.2.1] refused to talk to me: 554 "
                              "5.7.1 Service unavailable; Client host [198.51.100.7] blocked "
                              "using zen.spamhaus.org")
                         .cls,
                     CLASS_REPUTATION);
        cr_assert_eq(classify("450 4.7.1 Client host rejected: listed by SpamCop").cls,
                     CLASS_REPUTATION);
        cr_assert_eq(classify("421 4.3.2 Service unavailable, try later").cls, CLASS_OVERLOAD);
}

Test(classify, documented_provider_code_tables)
{
        /* NetEase's table: the code after the reply code names the cause */
        cr_assert_eq(classify("450 RP:DRC 126 smtp3,DcmowAC4 please retry").cls, CLASS_RATE_LIMIT);
        cr_assert_eq(classify("421 HL:ICC 163 mx11 connection limit").cls, CLASS_RATE_LIMIT);
        cr_assert_eq(classify("421 HL:REP 163 mx2,QsCowAB please check").cls, CLASS_REPUTATION);
        cr_assert_eq(classify("451 MI:RBL ip listed").cls, CLASS_REPUTATION);
        cr_assert_eq(classify("450 WM:BLU sender not in list").cls, CLASS_POLICY);
        cr_assert_eq(classify("451 DT:SUR link in body").cls, CLASS_POLICY);
        cr_assert_eq(classify("421 HL:TLD try later").cls, CLASS_OVERLOAD);
        /* Cox's and Spectrum's AUP codes beat the word "blocked" */
        cr_assert_eq(classify("421 4.7.0 cmsmtp 198.51.100.7 blocked. AUP#CXMXRT").cls,
                     CLASS_RATE_LIMIT);
        cr_assert_eq(classify("421 mx0 cmsmtp blocked, see the error codes page. AUP#In-1340").cls,
                     CLASS_RATE_LIMIT);
        cr_assert_eq(classify("421 cmsmtp 198.51.100.7 blocked. AUP#CDRBL").cls, CLASS_REPUTATION);
}

Test(classify, families_found_in_the_third_round)
{
        /* one bad command too many is still the client's fault */
        cr_assert_eq(classify("421 4.7.0 Too many bad command").cls, CLASS_POLICY);
        /* the receiver's authentication or spool trouble */
        cr_assert_eq(classify("451 Authentication error").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("451 4.3.0 spool error, try again").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("421 Gateway not ready, try later").cls, CLASS_OVERLOAD);
        cr_assert_eq(classify("451 Service unavailable temporarily").cls, CLASS_OVERLOAD);
        /* verification and the sender's domain */
        cr_assert_eq(classify("450 Unable to verify the sender").cls, CLASS_ROUTING);
        cr_assert_eq(classify("451 Sender domain does not exist at the moment").cls, CLASS_ROUTING);
        /* a restriction worded as what is allowed */
        cr_assert_eq(classify("450 Mail to this list is allowed only from members").cls,
                     CLASS_POLICY);
        /* "temporarily unavailable" alone, or of an address, names no trouble */
        cr_assert_eq(classify("451 Temporarily unavailable, try again").cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(classify("450 <bob@example.org> temporarily unavailable").cls,
                     CLASS_UNKNOWN_TEMP);
        cr_assert_eq(classify("421 Server temporarily unavailable").cls, CLASS_OVERLOAD);
        /* the hop behind a filtering gateway failed */
        cr_assert_eq(classify("451 Failed in remote rcpt - gateway").cls, CLASS_ROUTING);
}

Test(classify, greylister_fingerprints_are_greylist)
{
        cr_assert_eq(classify("450 4.2.0 <a@b.example>: Recipient address rejected: Greylisted, "
                              "see http://postgrey.schweikert.ch/help/b.example.html")
                         .cls,
                     CLASS_GREYLIST);
        cr_assert_eq(classify("422 4.2.2 Greylisted, please try again in a few moments.").cls,
                     CLASS_GREYLIST);
}

Test(classify, hints_are_explicit_delays_only)
{
        cr_assert_eq(classify("451 4.7.1 Greylisted, try again in 300 seconds").hint_s, 300);
        cr_assert_eq(classify("451 4.7.1 Greylisted, retry in 5 minutes").hint_s, 300);
        cr_assert_eq(classify("451 4.7.1 Greylisted, please come back in 00:04:59").hint_s, 299);
        cr_assert_eq(classify("451 4.7.1 Greylisted, please send again 15min later").hint_s, 900);
        cr_assert_eq(classify("451 too many messages in the last 10 minutes").hint_s, -1);
        cr_assert_eq(classify("451 DT:SPM please try again 1235720034").hint_s, -1);
        cr_assert_eq(classify("451 4.7.1 Greylisted, please try again shortly").hint_s, -1);
        cr_assert_eq(classify("554 4.4.7 Message expired: unable to deliver in 840 minutes").hint_s,
                     -1);
}

Test(classify, compound_and_remaining_delays_are_hints)
{
        /* "1 hour(s) 25 minute(s)": the parts add up */
        cr_assert_eq(classify("450 Too many mails, try again in 2 hour(s) 10 minute(s)").hint_s,
                     7800);
        cr_assert_eq(classify("451 4.7.1 Greylisted, retry in 1 hour and 30 minutes").hint_s, 5400);
        /* the time left before a greylister lets the triplet through */
        cr_assert_eq(classify("451 4.7.1 greylisting is active (120s left)").hint_s, 120);
}

Test(classify, huge_hints_are_clamped_to_a_day)
{
        cr_assert_eq(classify("451 try again in 9999 hours").hint_s, SCHED_HINT_MAX_S);
}

Test(classify, attempt_level_failures_map_to_routing_or_overload)
{
        struct sched_verdict v;
        struct sched_reply r = {.code = 421,
                                .enhanced = "4.4.1",
                                .text = "4.4.1 connect to mx.example.com[192.0.2.1]:25: "
                                        "Connection refused"};
        sched_classify(c, &r, &v);
        cr_assert_eq(v.cls, CLASS_ROUTING);
        r = (struct sched_reply){.code = 421,
                                 .enhanced = "4.4.2",
                                 .text = "conversation with mx.example.com[192.0.2.1] timed "
                                         "out while receiving the initial server greeting"};
        sched_classify(c, &r, &v);
        cr_assert_eq(v.cls, CLASS_OVERLOAD);
        r = (struct sched_reply){.code = 421,
                                 .enhanced = "4.4.2",
                                 .text = "lost connection with mx[192.0.2.1] while sending "
                                         "RCPT TO"};
        sched_classify(c, &r, &v);
        cr_assert_eq(v.cls, CLASS_OVERLOAD);
        r = (struct sched_reply){.code = 451,
                                 .enhanced = "4.4.3",
                                 .text = "Host or domain name lookup failed: name=example.com "
                                         "type=MX: Timeout while contacting DNS servers"};
        sched_classify(c, &r, &v);
        cr_assert_eq(v.cls, CLASS_ROUTING);
        r = (struct sched_reply){.code = 421,
                                 .enhanced = "4.7.5",
                                 .text = "STARTTLS handshake with mx[192.0.2.1] failed"};
        sched_classify(c, &r, &v);
        cr_assert_eq(v.cls, CLASS_ROUTING);
        r = (struct sched_reply){
            .code = 0, .enhanced = NULL, .text = "421 4.3.2 Service shutting down"};
        sched_classify(c, &r, &v);
        cr_assert_eq(v.cls, CLASS_OVERLOAD);
}

Test(classify, tarrys_own_failures_are_classified_by_their_reason_never_their_words)
{
        struct sched_verdict v;
        /* words no rule knows, words of another class: the reason decides */
        struct {
                enum outcome_local local;
                const char *text;
                enum reply_class cls;
        } cases[] = {
            {OUTCOME_LOCAL_CONNECT, "451 4.4.1 zzz", CLASS_ROUTING},
            {OUTCOME_LOCAL_DNS, "451 4.4.3 greylisted", CLASS_ROUTING},
            {OUTCOME_LOCAL_TLS, "451 4.7.5 TLS with mx[192.0.2.1]:25 failed: Connection reset",
             CLASS_ROUTING},
            {OUTCOME_LOCAL_POLICY, "451 4.7.5 MTA-STS", CLASS_ROUTING},
            {OUTCOME_LOCAL_TIMEOUT, "451 4.4.2 zzz", CLASS_OVERLOAD},
            {OUTCOME_LOCAL_DROPPED, "451 4.4.2 zzz", CLASS_OVERLOAD},
            {OUTCOME_LOCAL_PROTOCOL, "451 4.5.0 garbled reply", CLASS_UNKNOWN_TEMP},
            {OUTCOME_LOCAL_RESOURCE, "451 4.3.0 out of memory", CLASS_UNKNOWN_TEMP},
            {OUTCOME_LOCAL_WORKER, "451 4.3.0 delivery worker died: too many connections",
             CLASS_UNKNOWN_TEMP},
            {OUTCOME_LOCAL_SHUTDOWN, "451 4.3.0 delivery aborted: shutting down",
             CLASS_UNKNOWN_TEMP},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct sched_reply r = {.code = 451,
                                        .text = cases[i].text,
                                        .origin = OUTCOME_FROM_TARRY,
                                        .local = cases[i].local};
                sched_classify(c, &r, &v);
                cr_assert_eq(v.cls, cases[i].cls, "%s: %s", outcome_local_name(cases[i].local),
                             reply_class_name(v.cls));
                cr_assert_str_eq(v.rule, sched_local_rule_name(cases[i].local));
                cr_assert_eq(v.hint_s, -1, "no hint read from tarry's words");
        }
        /* the receiver saying the same words is classified by them */
        sched_classify_text(c, "451 4.3.0 out of memory", &v);
        cr_assert_eq(v.cls, CLASS_OVERLOAD);
        /* a permanent failure of ours is permanent */
        struct sched_reply nx = {.code = 550,
                                 .text = "550 5.4.4 example.invalid: no such domain",
                                 .origin = OUTCOME_FROM_TARRY,
                                 .local = OUTCOME_LOCAL_DNS};
        sched_classify(c, &nx, &v);
        cr_assert_eq(v.cls, CLASS_PERMANENT);
}

Test(classify, every_local_reason_has_a_rule_name)
{
        for (int l = 0; l < OUTCOME__LOCAL_MAX; l++) {
                cr_assert_not_null(sched_local_rule_name((enum outcome_local)l), "%d", l);
                cr_assert_not_null(outcome_local_name((enum outcome_local)l), "%d", l);
        }
        cr_assert_null(sched_local_rule_name(OUTCOME__LOCAL_MAX));
}

Test(classify, given_code_wins_over_text_without_prefix)
{
        struct sched_reply r = {.code = 451, .enhanced = NULL, .text = "Greylisted for 60 seconds"};
        struct sched_verdict v;
        sched_classify(c, &r, &v);
        cr_assert_eq(v.code, 451);
        cr_assert_eq(v.cls, CLASS_GREYLIST);
        cr_assert_eq(v.hint_s, 60);
}

Test(classify, garbage_and_empty_replies_are_temporary)
{
        cr_assert_eq(classify("").cls, CLASS_UNKNOWN_TEMP);
        cr_assert_str_eq(classify("").rule, "unparseable");
        cr_assert_eq(classify("\x01\x02\xff garbage").cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(classify("354 go ahead").cls, CLASS_UNKNOWN_TEMP);
        cr_assert_eq(classify(NULL).cls, CLASS_UNKNOWN_TEMP);
}

Test(classify, huge_hostile_reply_is_bounded)
{
        size_t n = 4u << 20;
        char *big = malloc(n + 1);
        cr_assert_not_null(big);
        memcpy(big, "451 ", 4);
        for (size_t i = 4; i < n; i++)
                big[i] = "a(\r\n451-"[i % 8];
        big[n] = '\0';
        struct sched_verdict v;
        sched_classify_text(c, big, &v);
        cr_assert_eq(v.code, 451);
        cr_assert_eq(v.cls, CLASS_UNKNOWN_TEMP);
        free(big);
}

Test(classify, operator_rules_are_tried_first)
{
        char err[256] = "";
        int r = sched_classifier_load_rules_string(
            c, "/etc/tarry/rules", "# local provider codes\n\npolicy 4?? 4.7.1 \\bACME-42\\b\n",
            err, sizeof(err));
        cr_assert_eq(r, 1, "%s", err);
        struct sched_verdict v = classify("451 4.7.1 Greylisted ACME-42");
        cr_assert_eq(v.cls, CLASS_POLICY);
        cr_assert_str_eq(v.rule, "rules:3");
        cr_assert_eq(classify("451 4.7.1 Greylisted").cls, CLASS_GREYLIST);
}

Test(classify, operator_rule_with_no_enhanced_code_pattern)
{
        char err[256] = "";
        cr_assert_eq(sched_classifier_load_rules_string(c, "r", "overload 421 - ^closing\n", err,
                                                        sizeof(err)),
                     1, "%s", err);
        cr_assert_eq(classify("421 closing now").cls, CLASS_OVERLOAD);
        cr_assert_neq(classify("421 4.7.0 closing now").cls, CLASS_OVERLOAD);
}

Test(classify, operator_rule_errors_name_file_and_line)
{
        char err[256] = "";
        cr_assert_eq(sched_classifier_load_rules_string(c, "rules.conf", "\ngreylst 4?? * x\n", err,
                                                        sizeof(err)),
                     -EINVAL);
        cr_assert_str_eq(err, "rules.conf:2: unknown class 'greylst'");
        cr_assert_eq(
            sched_classifier_load_rules_string(c, "rules.conf", "greylist 4??\n", err, sizeof(err)),
            -EINVAL);
        cr_assert(strstr(err, "rules.conf:1: expected") == err, "%s", err);
        cr_assert_eq(sched_classifier_load_rules_string(c, "rules.conf", "policy 4x? * x\n", err,
                                                        sizeof(err)),
                     -EINVAL);
        cr_assert_str_eq(err, "rules.conf:1: bad code pattern '4x?'");
        cr_assert_eq(sched_classifier_load_rules_string(c, "rules.conf", "policy 4?? * (\n", err,
                                                        sizeof(err)),
                     -EINVAL);
        cr_assert(strstr(err, "rules.conf:1: bad regular expression") == err, "%s", err);
        /* nothing was added */
        cr_assert_eq(classify("451 4.7.1 Greylisted").cls, CLASS_GREYLIST);
}

Test(classify, operator_rule_file_is_read_from_disk)
{
        char path[] = "/tmp/tarry-rules-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        const char *text = "rate_limit 4?? * slow lane\n";
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        char err[256] = "";
        cr_assert_eq(sched_classifier_load_rules(c, path, err, sizeof(err)), 1, "%s", err);
        cr_assert_eq(classify("451 you are in the slow lane").cls, CLASS_RATE_LIMIT);
        unlink(path);
        cr_assert_eq(sched_classifier_load_rules(c, path, err, sizeof(err)), -ENOENT);
}

/* ---- word families (rules with a weight, scored together) ---- */

static int load_families(void)
{
        char err[256] = "";
        const char *doc =
            "{\"tarry_policy\": 1, \"rules\": ["
            "{\"name\": \"w-policy\", \"code\": \"4??\", \"enhanced\": \"*\", \"text\": "
            "\"\\\\bdenied\\\\b\", \"class\": \"policy\", \"weight\": 1, \"reason\": \"a bare "
            "verdict\", \"source\": \"observed\"},"
            "{\"name\": \"w-routing\", \"code\": \"4??\", \"enhanced\": \"*\", \"text\": "
            "\"relay\", \"class\": \"routing\", \"weight\": 2, \"reason\": \"the path\", "
            "\"source\": \"observed\"},"
            "{\"name\": \"w-disk\", \"code\": \"4??\", \"enhanced\": \"*\", \"text\": \"disk\", "
            "\"class\": \"overload\", \"weight\": 1, \"reason\": \"resources\", \"source\": "
            "\"observed\"},"
            "{\"name\": \"w-spool\", \"code\": \"4??\", \"enhanced\": \"*\", \"text\": "
            "\"spool\", \"class\": \"overload\", \"weight\": 1, \"reason\": \"resources\", "
            "\"source\": \"observed\"}]}";
        int r = sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err));
        cr_assert_eq(r, 4, "%s", err);
        return r;
}

Test(classify, word_families_add_up_and_the_highest_score_wins)
{
        load_families();
        struct sched_verdict v = classify("451 relay denied for now");
        cr_assert_eq(v.cls, CLASS_ROUTING, "a named cause (2) outweighs a bare verdict (1)");
        cr_assert_str_eq(v.rule, "w-routing");
        v = classify("451 denied: disk and spool trouble");
        cr_assert_eq(v.cls, CLASS_OVERLOAD, "two families of one class (1 + 1) beat one (1)");
        cr_assert_str_eq(v.rule, "w-disk", "the class's first matching family names it");
        v = classify("451 denied, disk");
        cr_assert_eq(v.cls, CLASS_POLICY, "a tie goes to the family listed first");
        cr_assert_str_eq(v.file, "local.json");
        /* no family of the run matches: the rules after it are tried */
        cr_assert_eq(classify("451 4.7.1 Greylisted").cls, CLASS_GREYLIST);
        cr_assert_str_eq(classify("451 nothing to see").rule, "no-rule-matched");
}

Test(classify, a_word_family_needs_a_weight_in_range_and_no_action)
{
        char err[256] = "";
        const char *fmt = "{\"tarry_policy\": 1, \"rules\": [{\"name\": \"w\", \"code\": \"4??\", "
                          "\"enhanced\": \"*\", \"text\": \"x\", \"class\": \"policy\", %s, "
                          "\"reason\": \"r\", \"source\": \"observed\"}]}";
        const char *bad[] = {"\"weight\": 0", "\"weight\": 101", "\"weight\": \"2\"",
                             "\"weight\": 2, \"action\": {\"suspend_seconds\": 60}"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char doc[512];
                snprintf(doc, sizeof(doc), fmt, bad[i]);
                cr_assert_eq(
                    sched_classifier_load_rules_string(c, "local.json", doc, err, sizeof(err)),
                    -EINVAL, "%s", bad[i]);
                cr_assert(strstr(err, "local.json: rule 'w': ") == err, "%s", err);
                cr_assert_not_null(strstr(err, "weight"), "%s", err);
        }
        cr_assert_eq(classify("451 x").cls, CLASS_UNKNOWN_TEMP, "nothing was added");
}

struct class_case {
        const char *reply;
        enum reply_class cls;
};

/* Each reply gets its class (the failure names the reply and the rule). */
static void expect_classes(const struct class_case *cases, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                struct sched_verdict v = classify(cases[i].reply);
                cr_assert_eq(v.cls, cases[i].cls, "%s: got %d (rule %s)", cases[i].reply, v.cls,
                             v.rule);
        }
}

/* The shipped families give a cause to wordings no rule was written for
 * (none of these texts is in the corpus). */
Test(classify, shipped_word_families_name_the_cause_of_unseen_wordings)
{
        static const struct class_case cases[] = {
            {"451 Hourly sending quota reached for this sender", CLASS_RATE_LIMIT},
            {"451 Zu viele Verbindungen von Ihrer Adresse", CLASS_RATE_LIMIT},
            {"450 Virus scanner not responding", CLASS_OVERLOAD},
            {"451 Votre adresse IP figure sur une blacklist", CLASS_REPUTATION},
            {"451 Account bob has exceeded its storage allocation", CLASS_MAILBOX_FULL},
            {"451 Next hop for example.org is unreachable", CLASS_ROUTING},
            {"451 DNS service not available, try later", CLASS_ROUTING},
        };
        expect_classes(cases, sizeof(cases) / sizeof(cases[0]));
        /* a bare verdict is policy, but a named cause outweighs it */
        cr_assert_eq(classify("451 Access denied").cls, CLASS_POLICY);
        cr_assert_eq(classify("451 Sender address blocked for now").cls, CLASS_POLICY);
        cr_assert_eq(classify("451 Forwarding to the next hop denied for now").cls, CLASS_ROUTING);
        /* words that name no cause stay unknown_temp */
        cr_assert_eq(classify("451 Temporary failure, please try again later.").cls,
                     CLASS_UNKNOWN_TEMP);
        cr_assert_eq(classify("450 4.7.1 <bob@example.org>: Recipient address rejected: Try "
                              "again later")
                         .cls,
                     CLASS_UNKNOWN_TEMP);
}

Test(classify, shipped_word_families_tell_reputation_storage_and_receiver_faults_apart)
{
        static const struct class_case cases[] = {
            /* the sender's behaviour judged spam is its reputation, not a content policy */
            {"451 Mail deferred: abnormal sending behaviour from your IP", CLASS_REPUTATION},
            {"454 Rejected by spam behavior analysis, retry later", CLASS_REPUTATION},
            /* a limit on bad commands is the client's error, not a rate */
            {"421 Bad SMTP command limit reached, goodbye", CLASS_POLICY},
            /* a domain's or account's storage limit is a full mailbox, not a sending limit */
            {"452 Domain storage limit exceeded, try later", CLASS_MAILBOX_FULL},
            /* "user not exist" in other words is a soft user unknown */
            {"451 Recipient <bob@example.org> not exists here", CLASS_ROUTING},
            /* the receiver's own machinery failed */
            {"450 Exception while processing the message", CLASS_OVERLOAD},
            {"451 Internal error, please retry", CLASS_OVERLOAD},
            {"450 Error communicating with the mailbox store", CLASS_OVERLOAD},
            {"451 Failed to write the message to disk", CLASS_OVERLOAD},
        };
        expect_classes(cases, sizeof(cases) / sizeof(cases[0]));
        /* an internal error outweighs nothing: a named cause still wins */
        cr_assert_eq(classify("451 Internal error: DNS lookup for example.org timed out").cls,
                     CLASS_ROUTING);
        /* a bare "temporary failure" names no machinery: still unknown_temp */
        cr_assert_eq(classify("451 Temporary failure, please try again later.").cls,
                     CLASS_UNKNOWN_TEMP);
}

Test(classify, sixth_round_enhanced_codes_and_receiver_states)
{
        static const struct class_case cases[] = {
            /* congestion named in words is the receiver's load, whatever the code */
            {"451 4.4.5 Mail system congested, try later", CLASS_OVERLOAD},
            /* a receiver starting up or not yet ready names its own state */
            {"421 Mail service is starting up, try again shortly", CLASS_OVERLOAD},
            /* the receiver's own files have unsafe permissions */
            {"450 Delivery deferred: home directory world writable", CLASS_OVERLOAD},
            /* a failure of the recipient domain is a routing matter */
            {"450 Domain failure, retry later", CLASS_ROUTING},
            /* X.7.0 whose words only say the connection ends names no policy */
            {"421 4.7.0 Session idle too long, closing connection", CLASS_UNKNOWN_TEMP},
        };
        expect_classes(cases, sizeof(cases) / sizeof(cases[0]));
        /* a verdict about the connection is still policy */
        cr_assert_eq(classify("421 4.7.0 Your IP is not allowed to open a connection").cls,
                     CLASS_POLICY);
        /* a bare X.4.5 stays routing (4.4.x), words of a rate stay a rate limit */
        cr_assert_eq(classify("451 4.4.5 Please try later").cls, CLASS_ROUTING);
        cr_assert_eq(classify("452 4.4.5 Rate limit exceeded, try again later.").cls,
                     CLASS_RATE_LIMIT);
}

Test(classify, seventh_round_concepts_shared_by_several_sources)
{
        static const struct class_case cases[] = {
            /* the HELO name's DNS lookup failed: the path, not a policy verdict */
            {"450 4.7.1 <gw.example.net>: Helo command rejected: Host name lookup failure",
             CLASS_ROUTING},
            /* a cap on concurrent connections or sessions is a rate limit, whatever the
             * X.3.x code says */
            {"421 4.3.2 Concurrent connections from this client over the allowed number",
             CLASS_RATE_LIMIT},
            /* "<subject> <word> not exist": a soft user unknown */
            {"450 Recipient folder not exist", CLASS_ROUTING},
            /* a check in progress is a deliberate first-time deferral (convention 1) */
            {"450 4.7.1 Sender checking in progress, come back in a while", CLASS_GREYLIST},
            /* mail arriving too fast names a rate */
            {"421 Messages arriving too quickly from your server", CLASS_RATE_LIMIT},
            /* a violation names a policy */
            {"451 4.7.1 Message violates local rules, try again later", CLASS_POLICY},
            /* the receiver's name server is DNS trouble */
            {"451 Temporary failure contacting the name server", CLASS_ROUTING},
        };
        expect_classes(cases, sizeof(cases) / sizeof(cases[0]));
        /* the server-wide connection cap stays the receiver's load */
        cr_assert_eq(classify("421 4.3.2 The maximum number of concurrent server connections has "
                              "exceeded a limit, closing transmission channel")
                         .cls,
                     CLASS_OVERLOAD);
}

Test(classify, an_enhanced_code_after_a_vendor_tag_is_the_replys)
{
        struct sched_verdict v =
            classify("451 mx2.example.net 4.4.1 Temporary failure, please retry");
        cr_assert_str_eq(v.enhanced, "4.4.1");
        cr_assert_eq(v.cls, CLASS_ROUTING);
        v = classify("450 spamgw_7 4.7.1 Recipient address rejected: Policy rejection");
        cr_assert_str_eq(v.enhanced, "4.7.1");
        cr_assert_eq(v.cls, CLASS_POLICY);
        /* a plain word before a number is not a tag */
        v = classify("452 Quota 4.2.2 reached for this sender today");
        cr_assert_str_eq(v.enhanced, "");
        /* a leading enhanced code still wins over a later one */
        v = classify("451 4.3.0 relay.example.net 4.4.1 said: try later");
        cr_assert_str_eq(v.enhanced, "4.3.0");
}
