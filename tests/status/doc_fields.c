/* tests/status/doc_fields.c — see doc_fields.h. */
#include "doc_fields.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *doc;

static const char *page(void)
{
        if (doc)
                return doc;
        const char *src = getenv("TARRY_SOURCE_DIR");
        char path[4096];
        snprintf(path, sizeof(path), "%s/docs/status.md", src ? src : ".");
        FILE *f = fopen(path, "r");
        if (!f)
                return "";
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        rewind(f);
        doc = calloc(1, (size_t)n + 1);
        if (doc && fread(doc, 1, (size_t)n, f) != (size_t)n)
                doc[0] = '\0';
        fclose(f);
        return doc ? doc : "";
}

static bool word_char(char c)
{
        return isalnum((unsigned char)c) || c == '_';
}

bool doc_names(const char *word)
{
        size_t wl = strlen(word);
        bool in_code = false;
        for (const char *p = page(); *p; p++) {
                if (*p == '`') {
                        in_code = !in_code;
                        continue;
                }
                if (in_code && strncmp(p, word, wl) == 0 && !word_char(p[wl]) &&
                    (p == doc || !word_char(p[-1])))
                        return true;
        }
        return false;
}

static bool keyed_by_data(const char *key, const json_t *v)
{
        return strcmp(key, "by_class") == 0 || strcmp(key, "destination_states") == 0 ||
               (strcmp(key, "diagnoses") == 0 && json_is_object(v));
}

static size_t walk(const json_t *o, const char *at, char *missing, size_t len)
{
        size_t n = 0;
        if (json_is_array(o)) {
                size_t i;
                json_t *v;
                json_array_foreach (o, i, v)
                        n += walk(v, at, missing, len);
                return n;
        }
        if (!json_is_object(o))
                return 0;
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)o, k, v) {
                char path[512];
                snprintf(path, sizeof(path), "%s%s%s", at, *at ? "." : "", k);
                if (!doc_names(k) && !strstr(missing, path)) {
                        size_t used = strlen(missing);
                        snprintf(missing + used, len - used, "%s%s", used ? ", " : "", path);
                        n++;
                }
                if (!keyed_by_data(k, v))
                        n += walk(v, path, missing, len);
        }
        return n;
}

size_t doc_fields_missing(const json_t *o, char *missing, size_t len)
{
        return walk(o, "", missing, len);
}
