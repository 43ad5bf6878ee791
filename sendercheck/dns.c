/* sendercheck/dns.c — blocking c-ares queries; see dns.h. */
#include "sendercheck/dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ares_wait.h"

int sc_dns_open(struct sc_dns *dns, char *const *servers, size_t n_servers)
{
        struct ares_options o = {.timeout = 1500, .tries = 2};
        int r = ares_init_options(&dns->ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
        if (r != ARES_SUCCESS)
                return r == ARES_ENOMEM ? -ENOMEM : -EIO;
        if (n_servers > 0) {
                char csv[2048] = "";
                size_t len = 0;
                for (size_t i = 0; i < n_servers && servers[i] && len < sizeof csv; i++)
                        len += (size_t)snprintf(csv + len, sizeof csv - len, "%s%s", i ? "," : "",
                                                servers[i]);
                if (len >= sizeof csv || ares_set_servers_ports_csv(dns->ch, csv) != ARES_SUCCESS) {
                        ares_destroy(dns->ch);
                        return -EINVAL;
                }
        }
        return 0;
}

void sc_dns_close(struct sc_dns *dns)
{
        if (dns->ch)
                ares_destroy(dns->ch);
        dns->ch = NULL;
}

void sc_dns_answer_clear(struct sc_dns_answer *a)
{
        for (size_t i = 0; i < a->n; i++)
                free(a->rr[i]);
        *a = (struct sc_dns_answer){0};
}

static int add(struct sc_dns_answer *a, const char *s, size_t len)
{
        if (a->n >= SC_DNS_MAX_RR)
                return 0;
        char *c = malloc(len + 1);
        if (!c)
                return -ENOMEM;
        memcpy(c, s, len);
        c[len] = '\0';
        a->rr[a->n++] = c;
        return 0;
}

static int parse_txt(const unsigned char *buf, int len, struct sc_dns_answer *a)
{
        struct ares_txt_ext *txt = NULL;
        if (ares_parse_txt_reply_ext(buf, len, &txt) != ARES_SUCCESS)
                return a->status = SC_DNS_TEMP, 0;
        int r = 0;
        char *joined = NULL;
        size_t jl = 0;
        for (struct ares_txt_ext *t = txt; t && r == 0; t = t->next) {
                if (t->record_start && joined) {
                        r = add(a, joined, jl);
                        free(joined);
                        joined = NULL;
                        jl = 0;
                }
                char *j = realloc(joined, jl + t->length + 1);
                if (!j) {
                        r = -ENOMEM;
                        break;
                }
                joined = j;
                memcpy(joined + jl, t->txt, t->length);
                jl += t->length;
        }
        if (r == 0 && joined)
                r = add(a, joined, jl);
        free(joined);
        ares_free_data(txt);
        if (a->n == 0)
                a->status = SC_DNS_NODATA;
        return r;
}

static int parse_names(const unsigned char *buf, int len, int type, struct sc_dns_answer *a)
{
        int r = 0;
        if (type == ns_t_mx) {
                struct ares_mx_reply *mx = NULL;
                if (ares_parse_mx_reply(buf, len, &mx) != ARES_SUCCESS)
                        return a->status = SC_DNS_TEMP, 0;
                for (struct ares_mx_reply *m = mx; m && r == 0; m = m->next)
                        r = add(a, m->host, strlen(m->host));
                ares_free_data(mx);
        } else {
                struct hostent *h = NULL;
                if (ares_parse_ptr_reply(buf, len, NULL, 0, AF_INET, &h) != ARES_SUCCESS)
                        return a->status = SC_DNS_TEMP, 0;
                if (h->h_name)
                        r = add(a, h->h_name, strlen(h->h_name));
                for (char **al = h->h_aliases; al && *al && r == 0; al++)
                        r = add(a, *al, strlen(*al));
                ares_free_hostent(h);
        }
        if (a->n == 0)
                a->status = SC_DNS_NODATA;
        return r;
}

static int parse_addrs(const unsigned char *buf, int len, int type, struct sc_dns_answer *a)
{
        struct ares_addrttl v4[SC_DNS_MAX_RR];
        struct ares_addr6ttl v6[SC_DNS_MAX_RR];
        int n = SC_DNS_MAX_RR, r = 0;
        int pr = type == ns_t_a ? ares_parse_a_reply(buf, len, NULL, v4, &n)
                                : ares_parse_aaaa_reply(buf, len, NULL, v6, &n);
        if (pr != ARES_SUCCESS)
                return a->status = pr == ARES_ENODATA ? SC_DNS_NODATA : SC_DNS_TEMP, 0;
        for (int i = 0; i < n && r == 0; i++) {
                char text[INET6_ADDRSTRLEN];
                const void *src =
                    type == ns_t_a ? (const void *)&v4[i].ipaddr : (const void *)&v6[i].ip6addr;
                inet_ntop(type == ns_t_a ? AF_INET : AF_INET6, src, text, sizeof text);
                memcpy(a->addr[a->n], src, type == ns_t_a ? 4 : 16);
                r = add(a, text, strlen(text));
        }
        if (a->n == 0)
                a->status = SC_DNS_NODATA;
        return r;
}

int sc_dns_query(struct sc_dns *dns, const char *name, int type, struct sc_dns_answer *a)
{
        *a = (struct sc_dns_answer){.status = SC_DNS_OK, .ttl = 60};
        struct ares_wait_answer p;
        ares_wait_query(dns->ch, name, ns_c_in, type, &p);
        int r = 0;
        if (p.status == ARES_ENOTFOUND)
                a->status = SC_DNS_NXDOMAIN;
        else if (p.status == ARES_ENODATA)
                a->status = SC_DNS_NODATA;
        else if (p.status != ARES_SUCCESS || !p.buf)
                a->status = p.status == ARES_ENOMEM ? (r = -ENOMEM, SC_DNS_TEMP) : SC_DNS_TEMP;
        else if (type == ns_t_txt)
                r = parse_txt(p.buf, p.len, a);
        else if (type == ns_t_ptr || type == ns_t_mx)
                r = parse_names(p.buf, p.len, type, a);
        else
                r = parse_addrs(p.buf, p.len, type, a);
        free(p.buf);
        return r;
}

bool sc_dns_reverse_name(const char *addr, char *out, size_t size)
{
        unsigned char b[16];
        if (inet_pton(AF_INET, addr, b) == 1) {
                snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
                return true;
        }
        if (inet_pton(AF_INET6, addr, b) != 1 || size < 74)
                return false;
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;
        for (int i = 15; i >= 0; i--) {
                out[o++] = hex[b[i] & 15];
                out[o++] = '.';
                out[o++] = hex[b[i] >> 4];
                out[o++] = '.';
        }
        snprintf(out + o, size - o, "ip6.arpa");
        return true;
}
