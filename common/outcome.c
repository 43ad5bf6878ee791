/* common/outcome.c — names of the outcome vocabulary (common/outcome.h). */
#include "common/outcome.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#define ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static const char *const origin_names[] = {
    [OUTCOME_FROM_SERVER] = "server",
    [OUTCOME_FROM_TARRY] = "tarry",
};

static const char *const local_names[] = {
    [OUTCOME_LOCAL_NONE] = "none",       [OUTCOME_LOCAL_DNS] = "dns",
    [OUTCOME_LOCAL_CONNECT] = "connect", [OUTCOME_LOCAL_TIMEOUT] = "timeout",
    [OUTCOME_LOCAL_DROPPED] = "dropped", [OUTCOME_LOCAL_TLS] = "tls",
    [OUTCOME_LOCAL_POLICY] = "policy",   [OUTCOME_LOCAL_PROTOCOL] = "protocol",
    [OUTCOME_LOCAL_REFUSAL] = "refusal", [OUTCOME_LOCAL_RESOURCE] = "resource",
    [OUTCOME_LOCAL_WORKER] = "worker",   [OUTCOME_LOCAL_SHUTDOWN] = "shutdown",
};

static const char *const phase_names[] = {
    [OUTCOME_PHASE_NONE] = "none",       [OUTCOME_PHASE_ROUTE] = "route",
    [OUTCOME_PHASE_CONNECT] = "connect", [OUTCOME_PHASE_GREETING] = "greeting",
    [OUTCOME_PHASE_EHLO] = "ehlo",       [OUTCOME_PHASE_STARTTLS] = "starttls",
    [OUTCOME_PHASE_AUTH] = "auth",       [OUTCOME_PHASE_MAIL] = "mail",
    [OUTCOME_PHASE_RCPT] = "rcpt",       [OUTCOME_PHASE_DATA] = "data",
    [OUTCOME_PHASE_DOT] = "dot",
};

_Static_assert(ELEMENTS(origin_names) == OUTCOME__ORIGIN_MAX, "a name per origin");
_Static_assert(ELEMENTS(local_names) == OUTCOME__LOCAL_MAX, "a name per local reason");
_Static_assert(ELEMENTS(phase_names) == OUTCOME__PHASE_MAX, "a name per phase");

static const char *name_of(const char *const *names, size_t n, int v)
{
        return v >= 0 && (size_t)v < n ? names[v] : NULL;
}

static int value_of(const char *const *names, size_t n, const char *s)
{
        for (size_t i = 0; s && i < n; i++)
                if (names[i] && strcmp(names[i], s) == 0)
                        return (int)i;
        return -EINVAL;
}

const char *outcome_origin_name(enum outcome_origin o)
{
        return name_of(origin_names, ELEMENTS(origin_names), (int)o);
}

const char *outcome_local_name(enum outcome_local l)
{
        return name_of(local_names, ELEMENTS(local_names), (int)l);
}

const char *outcome_phase_name(enum outcome_phase p)
{
        return name_of(phase_names, ELEMENTS(phase_names), (int)p);
}

int outcome_origin_from_name(const char *s)
{
        return value_of(origin_names, ELEMENTS(origin_names), s);
}

int outcome_local_from_name(const char *s)
{
        return value_of(local_names, ELEMENTS(local_names), s);
}

int outcome_phase_from_name(const char *s)
{
        return value_of(phase_names, ELEMENTS(phase_names), s);
}
