/* sendercheck/spf.c — SPF evaluated by libspf2, its DNS answered through
 * c-ares (sendercheck/dns.h), so dns_servers applies as everywhere in tarry. */
#include "sendercheck/spf.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <spf2/spf.h>

static SPF_dns_stat_t herrno_of(enum sc_dns_status s)
{
        switch (s) {
        case SC_DNS_OK:
                return NETDB_SUCCESS;
        case SC_DNS_NXDOMAIN:
                return HOST_NOT_FOUND;
        case SC_DNS_NODATA:
                return NO_DATA;
        case SC_DNS_TEMP:
                break;
        }
        return TRY_AGAIN;
}

static SPF_dns_rr_t *lookup(SPF_dns_server_t *srv, const char *domain, ns_type type,
                            int should_cache)
{
        struct sc_dns *dns = srv->hook;
        struct sc_dns_answer a;
        (void)should_cache;
        if (type != ns_t_txt && type != ns_t_a && type != ns_t_aaaa && type != ns_t_mx &&
            type != ns_t_ptr) /* the obsolete SPF type (99): nobody publishes it any more */
                return SPF_dns_rr_new_init(srv, domain, type, 0, NO_DATA);
        if (sc_dns_query(dns, domain, type, &a) < 0)
                return NULL;
        SPF_dns_rr_t *rr = SPF_dns_rr_new_init(srv, domain, type, a.ttl, herrno_of(a.status));
        for (size_t i = 0; rr && i < a.n; i++) {
                size_t len = type == ns_t_a      ? sizeof(struct in_addr)
                             : type == ns_t_aaaa ? sizeof(struct in6_addr)
                                                 : strlen(a.rr[i]) + 1;
                if (SPF_dns_rr_buf_realloc(rr, (int)i, len) != SPF_E_SUCCESS)
                        break;
                if (type == ns_t_a || type == ns_t_aaaa)
                        memcpy(rr->rr[i], a.addr[i], len);
                else
                        memcpy(rr->rr[i]->txt, a.rr[i], len);
                rr->num_rr = (int)i + 1;
        }
        sc_dns_answer_clear(&a);
        return rr;
}

enum sc_spf_result sc_spf_check(struct sc_dns *dns, const char *domain, const char *addr,
                                char *text, size_t textlen)
{
        SPF_dns_server_t layer = {
            .lookup = lookup, .name = "tarry-c-ares", .hook = dns}; /* destroy NULL: ours */
        SPF_server_t *srv = SPF_server_new_dns(&layer, 0);
        SPF_request_t *req = srv ? SPF_request_new(srv) : NULL;
        SPF_response_t *resp = NULL;
        char from[320];
        snprintf(from, sizeof from, "postmaster@%s", domain);
        enum sc_spf_result res = SC_SPF_ERROR;
        snprintf(text, textlen, "cannot evaluate");
        bool v6 = strchr(addr, ':') != NULL;
        if (req &&
            (v6 ? SPF_request_set_ipv6_str(req, addr) : SPF_request_set_ipv4_str(req, addr)) ==
                SPF_E_SUCCESS &&
            SPF_request_set_env_from(req, from) == 0) {
                SPF_request_query_mailfrom(req, &resp);
                if (resp) {
                        SPF_result_t r = SPF_response_result(resp);
                        snprintf(text, textlen, "%s", SPF_strresult(r));
                        res = r == SPF_RESULT_PASS   ? SC_SPF_PASS
                              : r == SPF_RESULT_NONE ? SC_SPF_NONE
                                                     : SC_SPF_FAIL;
                        if (r == SPF_RESULT_TEMPERROR || r == SPF_RESULT_PERMERROR)
                                res = SC_SPF_ERROR;
                }
        }
        if (resp)
                SPF_response_free(resp);
        if (req)
                SPF_request_free(req);
        if (srv)
                SPF_server_free(srv);
        return res;
}
