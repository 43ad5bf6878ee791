/* daemon/diagnoses.c — tarryd's side of scheduler/diagnose.h (issue 21):
 * outcomes in, log lines when a diagnosis is raised or cleared, the
 * /status list (counts only on the aggregate view) and the gauge per code.
 */
#include <jansson.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/tarryd.h"
#include "scheduler/diagnose.h"

static void limits_of(const struct tarry_config *cfg, struct diag_limits *out)
{
        *out = (struct diag_limits){.greylist_no_window_s = cfg->diagnose_greylist_no_window_s,
                                    .reputation_s = cfg->diagnose_reputation_s,
                                    .unreachable_s = cfg->diagnose_unreachable_s};
}

static void on_note(const struct diag_info *di, bool raised, void *userdata)
{
        (void)userdata;
        const char *src = *di->source ? di->source : "the kernel's choice";
        if (raised)
                log_warn("diagnosis %s raised for %s from %s: %s; advice: %s",
                         diag_code_name(di->code), di->route, src, di->evidence, di->advice);
        else
                log_info("diagnosis %s cleared for %s from %s", diag_code_name(di->code), di->route,
                         src);
}

int diagnoses_start(struct tarryd *d)
{
        struct diag_limits lim;
        limits_of(d->cfg, &lim);
        return diag_new(&lim, on_note, d, &d->diag);
}

void diagnoses_reload(struct tarryd *d, const struct tarry_config *cfg)
{
        struct diag_limits lim;
        limits_of(cfg, &lim);
        diag_set_limits(d->diag, &lim);
}

void diagnoses_where(struct tarryd *d, const struct sched_item *it, int64_t now,
                     struct diagnoses_where *out)
{
        snprintf(out->source, sizeof(out->source), "%s", sched_item_source(it));
        snprintf(out->route, sizeof(out->route), "%s", sched_item_route(it));
        out->learned_s = sched_item_learned_greylist_s(d->sched, it, now);
}

void diagnoses_note(struct tarryd *d, const struct diagnoses_where *where, const char *queue_id,
                    const struct smtpc_result *res, const struct sched_rcpt_result *rr,
                    const struct sched_decision *dec, int64_t now)
{
        static const enum diag_outcome outcome[] = {
            [SCHED_DELIVERED] = DIAG_ACCEPTED,
            [SCHED_RETRY] = DIAG_DEFERRED,
            [SCHED_FAILED] = DIAG_FAILED,
        };
        if (dec->action == SCHED_NOT_ATTEMPTED)
                return;
        const struct sched_provider *p =
            res->mx_host ? sched_provider_for_mx(d->classifier, res->mx_host) : NULL;
        struct diag_event ev = {
            .source = where->source,
            .route = where->route,
            .queue_id = queue_id,
            .outcome = outcome[dec->action],
            .cls = dec->cls,
            /* a server answered (a 5xx greeting too): typed, not guessed */
            .reached = res->status == SMTPC_ATTEMPT_DONE || res->origin == OUTCOME_FROM_SERVER,
            .first_deferral_us = rr->first_deferral_us,
            .window_s = dec->hint_s >= 0 ? dec->hint_s : where->learned_s,
            .text = rr->reply ? rr->reply->text : res->text,
            .remediation = p ? p->remediation : NULL,
        };
        if (diag_on_event(d->diag, &ev, now) < 0)
                log_error("%s: out of memory: outcome not counted for diagnoses", queue_id);
}

static int item_json(const struct diag_info *di, void *userdata)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "code", diag_code_name(di->code),
                              "destination", di->route, "source_address", di->source, "since",
                              (json_int_t)(di->since_us / 1000000), "evidence", di->evidence,
                              "advice", di->advice);
        return o ? json_array_append_new(userdata, o) : -1;
}

json_t *diagnoses_json(struct tarryd *d, enum status_view view)
{
        if (view == STATUS_VIEW_FULL) {
                json_t *a = json_array();
                if (a)
                        diag_foreach(d->diag, item_json, a);
                return a;
        }
        /* TCP: no destination names or addresses, only how many per code */
        json_t *o = json_object();
        for (int c = 0; o && c < DIAG__MAX; c++)
                json_object_set_new(o, diag_code_name(c),
                                    json_integer((json_int_t)diag_count(d->diag, c)));
        return o;
}

void diagnoses_metrics(struct tarryd *d, struct status_metrics *mt)
{
        for (int c = 0; c < DIAG__MAX; c++)
                status_gauge_set(mt, STATUS_M_DIAGNOSES, STATUS_LABELS(diag_code_name(c)),
                                 (double)diag_count(d->diag, c));
}
