/* cli/status_client.c — libcurl client for tarryd's status endpoint. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli/status_client.h"
#include "common/cleanup.h"

#define MAX_ENDPOINTS 8
#define MAX_PATH_LEN  2048

struct endpoint {
        char *unix_path; /* NULL for TCP */
        char *base_url;  /* "http://127.0.0.1:8025" or "http://localhost" for unix */
        char *name;      /* for messages */
};

struct status_client {
        struct endpoint ep[MAX_ENDPOINTS];
        size_t n;
        const struct endpoint *answered;
        bool curl_ready;
        char error[CURL_ERROR_SIZE + 160];
};

struct body {
        char *data;
        size_t len;
        bool too_big;
        /* streaming: a 200's body goes to sink as it arrives */
        int (*sink)(const char *data, size_t len, void *userdata);
        void *sink_userdata;
        CURL *h;
        int sink_error;   /* what sink returned to stop the transfer */
        size_t delivered; /* bytes given to sink */
};

static int add_endpoint(struct status_client *c, const char *unix_path, const char *url,
                        const char *name)
{
        if (c->n == MAX_ENDPOINTS)
                return 0;
        struct endpoint *e = &c->ep[c->n];
        e->unix_path = unix_path ? strdup(unix_path) : NULL;
        e->base_url = strdup(url);
        e->name = strdup(name);
        if ((unix_path && !e->unix_path) || !e->base_url || !e->name) {
                free(e->unix_path);
                free(e->base_url);
                free(e->name);
                return -ENOMEM;
        }
        c->n++;
        return 0;
}

/* "host:port" / "[v6]:port" → a loopback URL; wildcards become loopback. */
static int tcp_url(const char *entry, char *url, size_t len)
{
        const char *colon = strrchr(entry, ':');
        if (!colon || colon == entry || colon[1] == '\0' ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1))
                return -EINVAL;
        int hlen = (int)(colon - entry);
        const char *port = colon + 1;
        if (strncmp(entry, "0.0.0.0:", 8) == 0)
                return snprintf(url, len, "http://127.0.0.1:%s", port) < (int)len ? 0 : -EINVAL;
        if (strncmp(entry, "[::]:", 5) == 0)
                return snprintf(url, len, "http://[::1]:%s", port) < (int)len ? 0 : -EINVAL;
        return snprintf(url, len, "http://%.*s:%s", hlen, entry, port) < (int)len ? 0 : -EINVAL;
}

enum kind { K_UNIX, K_MAILQ, K_TCP };

static enum kind kind_of(const char *entry)
{
        return strncmp(entry, "unix:", 5) == 0    ? K_UNIX
               : strncmp(entry, "mailq:", 6) == 0 ? K_MAILQ
                                                  : K_TCP;
}

/* The endpoints of one kind, in the order configured. */
static int add_listed(struct status_client *c, const char *const *listen, enum kind want)
{
        char url[320];
        for (size_t i = 0; listen && listen[i]; i++) {
                enum kind k = kind_of(listen[i]);
                int r = 0;
                if (k != want)
                        continue;
                if (k != K_TCP)
                        r = add_endpoint(c, strchr(listen[i], ':') + 1, "http://localhost",
                                         listen[i]);
                else if (tcp_url(listen[i], url, sizeof(url)) == 0)
                        r = add_endpoint(c, NULL, url, url);
                if (r < 0)
                        return r;
        }
        return 0;
}

int status_client_new(const char *const *listen, struct status_client **out)
{
        struct status_client *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        /* the full view first; an ordinary user, refused there, gets their own
         * messages from a mailq: socket; a TCP port has counts only */
        int r = add_listed(c, listen, K_UNIX);
        if (r >= 0)
                r = add_listed(c, listen, K_MAILQ);
        if (r >= 0)
                r = add_listed(c, listen, K_TCP);
        if (r >= 0 && c->n == 0)
                r = -ENOENT;
        if (r < 0) {
                status_client_free(c);
                return r;
        }
        /* Reference-counted and thread-safe in curl >= 7.84; paired in status_client_free. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                status_client_free(c);
                return -ENOMEM;
        }
        c->curl_ready = true;
        *out = c;
        return 0;
}

void status_client_free(struct status_client *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n; i++) {
                free(c->ep[i].unix_path);
                free(c->ep[i].base_url);
                free(c->ep[i].name);
        }
        if (c->curl_ready)
                curl_global_cleanup();
        free(c);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct body *b = userdata;
        size_t n = size * nmemb;
        long code = 0;
        if (b->sink && curl_easy_getinfo(b->h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
            code == 200) {
                int r = b->sink(ptr, n, b->sink_userdata);
                if (r < 0) {
                        b->sink_error = r;
                        return 0;
                }
                b->delivered += n;
                return n;
        }
        if (b->len + n > STATUS_CLIENT_MAX_BODY) {
                b->too_big = true;
                return 0;
        }
        char *p = realloc(b->data, b->len + n + 1);
        if (!p)
                return 0;
        memcpy(p + b->len, ptr, n);
        b->data = p;
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

/* Errors meaning nobody answered on this endpoint (try the next one). */
static bool not_answering(CURLcode rc)
{
        static const CURLcode codes[] = {
            CURLE_COULDNT_CONNECT,    /* no socket file, refused, EACCES on the socket */
            CURLE_OPERATION_TIMEDOUT, /* connect timeout or a stuck daemon */
            CURLE_GOT_NOTHING,        /* connection closed before any reply */
            CURLE_RECV_ERROR,         /* reset while waiting */
            CURLE_SEND_ERROR,         /* reset while sending */
            CURLE_COULDNT_RESOLVE_HOST,
        };
        for (size_t i = 0; i < ELEMENTSOF(codes); i++)
                if (codes[i] == rc)
                        return true;
        return false;
}

static CURLcode perform(const struct endpoint *e, const char *method, const char *path,
                        struct body *b, long *code, char *errbuf)
{
        _cleanup_free_ char *url = NULL;
        CURL *h = curl_easy_init();
        if (!h || asprintf(&url, "%s%s", e->base_url, path) < 0) {
                curl_easy_cleanup(h);
                return CURLE_OUT_OF_MEMORY;
        }
        errbuf[0] = '\0';
        b->h = h;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
        if (e->unix_path)
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, e->unix_path);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (strcmp(method, "POST") == 0) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
        }
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)STATUS_CLIENT_CONNECT_TIMEOUT_MS);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)STATUS_CLIENT_TIMEOUT_MS);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        CURLcode rc = curl_easy_perform(h);
        if (rc == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
        curl_easy_cleanup(h);
        return rc;
}

static bool request_valid(const char *method, const char *path)
{
        if (!method || !path || path[0] != '/' || strlen(path) > MAX_PATH_LEN)
                return false;
        for (const char *p = path; *p; p++)
                if ((unsigned char)*p <= ' ' || *p == 0x7f)
                        return false;
        return strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0 ||
               strcmp(method, "DELETE") == 0;
}

/* Why a unix socket did not answer, in words (curl would say "Failed to
 * connect to localhost port 80"): try the connect ourselves for its errno. */
static void unix_words(const struct endpoint *e, const char *curl_words, char *out, size_t len)
{
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int err = ENAMETOOLONG;
        if (strlen(e->unix_path) < sizeof(a.sun_path)) {
                memcpy(a.sun_path, e->unix_path, strlen(e->unix_path) + 1);
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                err = fd < 0                                               ? errno
                      : connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0
                                                                           : errno;
                if (fd >= 0)
                        close(fd);
        }
        switch (err) {
        case 0:
                snprintf(out, len, "%s: %s", e->unix_path, curl_words);
                break;
        case ENOENT:
                snprintf(out, len, "%s: no such socket (is tarryd running?)", e->unix_path);
                break;
        case EACCES:
        case EPERM:
                snprintf(out, len,
                         "%s: permission denied (the socket is for root and the status_group)",
                         e->unix_path);
                break;
        case ECONNREFUSED:
                snprintf(out, len, "%s: connection refused (tarryd is not running)", e->unix_path);
                break;
        default:
                snprintf(out, len, "%s: %s", e->unix_path, strerror(err));
        }
}

static int request(struct status_client *c, const char *method, const char *path, long *http_code,
                   char **body, size_t *body_len,
                   int (*sink)(const char *data, size_t len, void *userdata), void *userdata)
{
        char errbuf[CURL_ERROR_SIZE];
        if (!c || !http_code || !body || !request_valid(method, path))
                return -EINVAL;
        c->answered = NULL;
        for (size_t i = 0; i < c->n; i++) {
                struct body b = {.sink = sink, .sink_userdata = userdata};
                CURLcode rc = perform(&c->ep[i], method, path, &b, http_code, errbuf);
                const char *words = errbuf[0] ? errbuf : curl_easy_strerror(rc);
                if (rc != CURLE_OK && c->ep[i].unix_path)
                        unix_words(&c->ep[i], words, c->error, sizeof(c->error));
                else
                        snprintf(c->error, sizeof(c->error), "%s: %s", c->ep[i].name, words);
                if (rc == CURLE_OK) {
                        c->answered = &c->ep[i];
                        *body = b.data ? b.data : strdup("");
                        if (body_len)
                                *body_len = b.len;
                        return *body ? 0 : -ENOMEM;
                }
                free(b.data);
                if (b.sink_error < 0)
                        return b.sink_error;
                if (b.too_big)
                        return -EFBIG;
                if (b.delivered > 0) /* part of a reply went out: not for another endpoint */
                        return -EPROTO;
                if (rc == CURLE_OUT_OF_MEMORY)
                        return -ENOMEM;
                if (!not_answering(rc))
                        return -EPROTO;
        }
        return STATUS_CLIENT_NOT_ANSWERING;
}

int status_client_request(struct status_client *c, const char *method, const char *path,
                          long *http_code, char **body, size_t *body_len)
{
        return request(c, method, path, http_code, body, body_len, NULL, NULL);
}

int status_client_request_stream(struct status_client *c, const char *method, const char *path,
                                 long *http_code,
                                 int (*sink)(const char *data, size_t len, void *userdata),
                                 void *userdata, char **body, size_t *body_len)
{
        if (!sink)
                return -EINVAL;
        return request(c, method, path, http_code, body, body_len, sink, userdata);
}

int status_client_request_json(struct status_client *c, const char *method, const char *path,
                               long *http_code, json_t **out)
{
        _cleanup_free_ char *body = NULL;
        size_t len = 0;
        int r = status_client_request(c, method, path, http_code, &body, &len);
        if (r < 0)
                return r;
        json_t *j = json_loadb(body, len, 0, NULL);
        if (!j)
                return -EBADMSG;
        *out = j;
        return 0;
}

const char *status_client_last_error(const struct status_client *c)
{
        return c ? c->error : "";
}

const char *status_client_endpoint(const struct status_client *c)
{
        return c && c->answered ? c->answered->name : NULL;
}
