/* scheduler/rules.c — the compiled-in classification rules and the policy
 * data the scheduler acts on. Behaviour changes by editing a row.
 *
 * Rules are tried in order, first match wins, after the operator's own
 * rules. The reply code decides before any row: 2xx accepted, 5xx permanent,
 * anything but 4xx unknown_temp. Rows keep to patterns a mail admin would
 * recognise: a greylister's fingerprint, a provider's documented code, a
 * wording used by many servers, and last the RFC 3463 enhanced-code meaning
 * for replies whose words say nothing specific.
 */
#include "scheduler/internal.h"

#define G   CLASS_GREYLIST
#define REP CLASS_REPUTATION
#define RL  CLASS_RATE_LIMIT
#define OV  CLASS_OVERLOAD
#define MF  CLASS_MAILBOX_FULL
#define RT  CLASS_ROUTING
#define PO  CLASS_POLICY
#define UT  CLASS_UNKNOWN_TEMP

const struct rule_def sched_default_rules[] = {
    /* ---- greylisters' fingerprints ---- */
    {"greylist-word", "4??", "*", "gr[ae]y[- ]?list", G,
     "the receiver says it greylists (postgrey, milter-greylist, sqlgrey, Exim ACLs, Haraka)"},
    {"postgrey-url", "4??", "*", "postgrey", G, "postgrey's help URL in its default reply"},
    {"greylistd-not-yet-authorized", "4??", "*", "not yet authori[sz]ed to deliver", G,
     "greylistd/ddgrey Exim ACL default message"},
    {"mimecast-greylist", "4??", "*", "internal resource temporarily unavailable", G,
     "Mimecast's greylisting reply"},
    {"address-verification", "4??", "*", "address verification in progress", G,
     "a deliberate first-time deferral while the receiver verifies the sender"},

    /* ---- providers' documented codes ---- */
    {"microsoft-ip-reputation", "4??", "4.7.650|4.7.651", ".", REP,
     "Microsoft 4.7.650/651: rate limited due to the sending IP's reputation"},
    {"microsoft-server-busy", "4??", "4.7.500", ".", OV,
     "Microsoft 4.7.500 'Server busy': the receiving side is saturated"},
    {"gmail-rate-limit", "4??", "4.7.28", ".", RL, "Gmail 4.7.28: sending rate too high"},
    {"temporary-dns-failure", "4??", "*",
     "(temporary|temporarily)[^.]{0,40}dns|dns[^.]{0,20}(fail|error|timeout|temporar)|"
     "name lookup failed|name service error|host or domain name",
     RT, "a DNS lookup (ours or the receiver's) failed for now: the path, not the message"},
    {"gmail-sender-requirements", "4??", "4.7.2[3-9]|4.7.3[0-2]", ".", PO,
     "Gmail 4.7.23-4.7.32: SPF/DKIM/PTR/TLS/alignment requirements not met"},
    {"ptr-requirement", "4??", "*", "\\bPTR\\b", PO,
     "the receiver requires a matching PTR record: a sender-side fix"},
    {"hotmail-rate", "4??", "*", "\\bRP-00[1-3]\\b", RL,
     "Outlook.com RP-001..003: per-hour/per-day sending limits"},
    {"yahoo-ts-codes", "4??", "*", "\\[(TS|TSS|IPTS)[0-9]+\\]", REP,
     "Yahoo [TSxx]/[TSSxx]: deferred for complaints or unexpected volume from this IP"},
    {"yahoo-legacy-codes", "4??", "*", "\\b4\\.16\\.5[0-9]", REP,
     "legacy Yahoo 4.16.5x diagnostics: deferred for this IP's behaviour"},
    {"aol-dynamic-ip", "4??", "*", "\\(DYN:", REP, "AOL DYN:Tn: the sending IP looks dynamic"},
    {"aol-no-rdns", "4??", "*", "\\(DNS:", RT, "AOL DNS:xx: reverse DNS of the sending IP"},
    {"orange-ip-refused", "4??", "*", "OFR_999", REP,
     "Orange OFR_999: the sending IP is refused for now"},
    {"netease-spam", "4??", "*", "\\bDT:SPM\\b", PO, "NetEase DT:SPM: content judged as spam"},
    {"exchange-proxy-failure", "4??", "*", "\\bPRX[0-9]+\\b", OV,
     "Exchange Online PRXn: front end could not reach a back end"},
    {"trendmicro-drd", "4??", "*", "\\bDRD\\b", RT,
     "Trend Micro: domain routing data could not be loaded"},

    /* ---- reputation ---- */
    {"complaints", "4??", "*", "complaint", REP, "deferred because of user complaints"},
    {"reputation-word", "4??", "*", "reputation", REP, "the reply names the sender's reputation"},
    {"blocklisted", "4??", "*",
     "black ?list|block ?list|\\bdnsbl\\b|\\brbl\\b|blocked using|\\bspamhaus\\b|\\bspamcop\\b",
     REP, "the sending IP is on a block list"},
    {"yahoo-resources", "4??", "*", "resources temporarily unavailable", REP,
     "Yahoo's reputation/volume deferral wording"},
    {"abuse-desk", "4??", "*", "abuse@", REP,
     "a deferral pointing at the abuse desk is about the sender"},
    {"invalid-recipients", "4??", "*", "invalid recipients", REP,
     "too many invalid recipients: list quality"},

    /* ---- rate limiting ---- */
    {"server-connection-cap", "4??", "*", "concurrent server connections", OV,
     "Exchange server-wide connection cap: the receiver is full, not us"},
    {"too-many", "4??", "*", "\\btoo many\\b", RL,
     "too many connections/recipients/messages/sessions from us"},
    {"throttled", "4??", "*", "throttl", RL, "the receiver throttles us"},
    {"rate-limit-words", "4??", "*",
     "rate[- ]?limit|limit (exceeded|reached)|exceeded (the |a |its )?(configured )?limit|"
     "reached its limit|limits? for how many",
     RL, "a limit on what we send was reached"},
    {"sending-rate", "4??", "*",
     "unusual rate|receiving mail (at a rate|too quickly)|submission rate|sending rate", RL,
     "we (or this recipient) receive mail too fast"},
    {"slow-down", "4??", "*", "\\bslow(er| down)\\b", RL, "the receiver asks us to slow down"},
    {"gmail-domains-per-transaction", "4??", "*", "domains per transaction", RL,
     "Gmail: one transaction per destination domain"},
    {"sending-quota", "4??", "*", "(daily|hourly|sending|message) quota", RL,
     "a sending quota (not a mailbox quota) is used up"},

    /* ---- full mailbox ---- */
    {"mailbox-full", "4??", "*",
     "over ?quota|quota exceeded|exceeded (its |the )?quota|out of quota|mailbox (is )?full|"
     "mailbox quota|storage space|inbox is full",
     MF, "the recipient's mailbox is over quota"},

    /* ---- routing and addressing ---- */
    {"unverified-address", "4??", "*", "unverified address", RT,
     "the receiver could not verify the address downstream"},
    {"user-unknown-temp", "4??", "*",
     "user unknown|unknown (user|recipient)|no such (user|mailbox)|recipient (address )?not found",
     RT, "a 4xx user unknown: soft bounce or a receiver misconfiguration"},
    {"dns-of-sender", "4??", "*",
     "domain not found|host not found|unresolvable|cannot find your hostname|"
     "reverse (dns|name|lookup)|no reverse|mail exchanger",
     RT, "the receiver's DNS checks of our host or domain failed for now"},
    {"relay-denied-temp", "4??", "*", "relay access denied|relaying denied|open relay", RT,
     "a 4xx relay denial: wrong MX or receiver misconfiguration"},
    {"route-config", "4??", "*", "proxy destination|network configuration", RT,
     "the receiver's own routing is broken or misconfigured"},
    {"connect-failed", "4??", "*",
     "connection refused|no route to host|network is unreachable|host unreachable", RT,
     "the next hop does not accept connections"},

    /* ---- receiver overloaded or unwell ---- */
    {"busy", "4??", "*", "\\bbusy\\b", OV, "the receiver says it is busy"},
    {"service-unavailable", "4??", "*",
     "temporarily (unavailable|not available)|currently unavailable|service unavailable|"
     "\\bnot available\\b",
     OV, "the receiving service is down for now"},
    {"system-trouble", "4??", "*",
     "system problem|local problem|local error|system resources|insufficient (system|disk)|"
     "disk space|shutting down|upstream error|no mdb|failed to be replicated|unable to process",
     OV, "the receiver has an internal problem (disk, resources, back end)"},
    {"temporary-service-failure", "4??", "*", "temporary (authentication|service) failure", OV,
     "a receiver component failed for now"},
    {"connection-lost", "4??", "*",
     "timed out|lost connection|connection (dropped|reset|closed)|conversation with", OV,
     "the receiver stopped answering during the session"},

    /* ---- policy ---- */
    {"policy-words", "4??", "*",
     "polic(y|ies)|administrative|access denied|not authori[sz]ed|\\bblocked\\b", PO,
     "the receiver cites its policy"},

    /* ---- nothing specific despite suggestive words ---- */
    {"postfix-session-timeout", "4??", "*", "error: timeout exceeded", UT,
     "Postfix smtpd idle timeout: says nothing about why"},
    {"session-expired", "4??", "*", "connection expired|try again later, closing connection", UT,
     "Gmail session expiry / HELO-time deferral: reconnecting later is all it asks"},

    /* ---- enhanced status code meaning (RFC 3463) when the words say nothing ---- */
    {"enh-system-congestion", "4??", "4.4.5", ".", OV, "X.4.5 system congestion"},
    {"enh-network-routing", "4??", "4.4.*", ".", RT, "X.4.X network and routing status"},
    {"enh-mailbox-full", "4??", "4.2.2", ".", MF, "X.2.2 mailbox full"},
    {"enh-mail-system-other", "4??", "4.3.0", ".", UT,
     "X.3.0 other mail system status: no cause given"},
    {"enh-mail-system", "4??", "4.3.*", ".", OV,
     "X.3.X mail system status: disk, resources, not accepting"},
    {"enh-address", "4??", "4.1.*", ".", RT, "X.1.X address status: user/domain lookups"},
    {"enh-policy-other", "4??", "4.7.0", ".", PO, "X.7.0 other security or policy status"},
    {"enh-crypto", "4??", "4.7.5", ".", RT,
     "X.7.5 cryptographic failure: TLS to this route is broken"},
    {"enh-too-many-recipients", "4??", "4.5.3", ".", RL, "X.5.3 too many recipients"},
};
const size_t sched_n_default_rules = sizeof(sched_default_rules) / sizeof(sched_default_rules[0]);

/* Windows of common greylisters' defaults: a retry schedule that would pass
 * one of these ends is pulled in to just after it, so the receiver is met as
 * soon as it lets us through. */
const struct greylist_window sched_greylist_windows[] = {
    {300, "postgrey --delay 300 s; rspamd greylist timeout 5 min; sqlgrey reconnect_delay 5 min"},
    {1500, "OpenBSD spamd passtime 25 min"},
    {1800, "milter-greylist 'greylist' default 30 min"},
    {3600, "greylistd retry minimum 1 h"},
};
const size_t sched_n_greylist_windows =
    sizeof(sched_greylist_windows) / sizeof(sched_greylist_windows[0]);

const struct class_trait sched_class_traits[CLASS__MAX] = {
    /* aim just after greylister windows; learn the destination's window */
    [CLASS_GREYLIST] = {true, PAUSE_NONE, false, false},
    /* the IP's standing: stop the whole destination, come back gently */
    [CLASS_REPUTATION] = {false, PAUSE_SUSPEND, true, false},
    /* a rate limit on us: pause, then one connection at a time; a per-recipient
     * limit (others delivered in the same attempt) pauses nothing */
    [CLASS_RATE_LIMIT] = {false, PAUSE_SUSPEND, false, false},
    /* receiver down or saturated: back off all of it, probe, spread the return */
    [CLASS_OVERLOAD] = {false, PAUSE_BACKOFF, false, true},
    /* one recipient's box: nothing to do with the destination */
    [CLASS_MAILBOX_FULL] = {false, PAUSE_NONE, false, false},
    /* path broken (DNS, refused, TLS): back off all of it, probe, spread */
    [CLASS_ROUTING] = {false, PAUSE_BACKOFF, false, true},
    [CLASS_POLICY] = {false, PAUSE_NONE, false, false},
    /* silent greylisters (rspamd, spamd) answer like this: same windows, learning */
    [CLASS_UNKNOWN_TEMP] = {true, PAUSE_NONE, false, false},
    [CLASS_PERMANENT] = {false, PAUSE_NONE, false, false},
};
