/* tests/install/test_manpage.c — tarry.conf(5) and the parser's key table
 * must not drift: every key cfg_print() shows has an entry in
 * man/tarry.conf.5.scd under its section, and every entry there is a key the
 * parser knows. [retry.CLASS] stands for every [retry.*] section. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define MAX_KEYS 200

struct keyset {
        char keys[MAX_KEYS][96]; /* "section key" */
        size_t n;
};

static void add(struct keyset *s, const char *section, const char *key)
{
        char k[96];
        snprintf(k, sizeof(k), "%s %s",
                 strncmp(section, "retry.", 6) == 0 ? "retry.CLASS" : section, key);
        for (size_t i = 0; i < s->n; i++)
                if (strcmp(s->keys[i], k) == 0)
                        return;
        cr_assert_lt(s->n, MAX_KEYS);
        strcpy(s->keys[s->n++], k);
}

static bool has(const struct keyset *s, const char *k)
{
        for (size_t i = 0; i < s->n; i++)
                if (strcmp(s->keys[i], k) == 0)
                        return true;
        return false;
}

/* "[section]" at the start of line into section. */
static bool section_line(const char *line, char *section, size_t len)
{
        const char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
        if (!open || !close || (size_t)(close - open) >= len)
                return false;
        snprintf(section, len, "%.*s", (int)(close - open - 1), open + 1);
        return true;
}

/* The keys of the effective configuration, as cfg_print shows them. */
static void parser_keys(struct keyset *s)
{
        struct tarry_config *cfg = NULL;
        char err[256];
        cr_assert_eq(cfg_load_string("empty", "", &cfg, err, sizeof(err)), 0, "%s", err);
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        cfg_print(f, cfg);
        fclose(f);
        cfg_free(cfg);
        char section[64] = "";
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
                if (line[0] == '[') {
                        section_line(line, section, sizeof(section));
                        continue;
                }
                size_t n = strspn(line, "abcdefghijklmnopqrstuvwxyz_0123456789");
                if (n > 0 && strncmp(line + n, " =", 2) == 0) {
                        line[n] = '\0';
                        add(s, section, line);
                }
        }
        free(text);
}

/* The entries of the man page: lines "*key* = _default_" under "## [section]". */
static void man_keys(struct keyset *s)
{
        char path[1024];
        const char *src = getenv("TARRY_SOURCE_DIR");
        snprintf(path, sizeof(path), "%s/man/tarry.conf.5.scd", src ? src : ".");
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "cannot read %s", path);
        char line[1024], section[64] = "";
        while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, "## [", 4) == 0) {
                        section_line(line, section, sizeof(section));
                        continue;
                }
                if (line[0] != '*')
                        continue;
                size_t n = strspn(line + 1, "abcdefghijklmnopqrstuvwxyz_0123456789");
                if (n > 0 && strncmp(line + 1 + n, "* = ", 4) == 0) {
                        line[1 + n] = '\0';
                        cr_assert(section[0], "%s: key %s outside a section", path, line + 1);
                        add(s, section, line + 1);
                }
        }
        fclose(f);
}

Test(manpage, every_key_the_parser_knows_is_in_tarry_conf_5)
{
        static struct keyset parser, man;
        parser_keys(&parser);
        man_keys(&man);
        cr_assert_gt(parser.n, 20, "cfg_print listed only %zu keys", parser.n);
        for (size_t i = 0; i < parser.n; i++)
                cr_expect(has(&man, parser.keys[i]), "tarry.conf(5) does not document [%s]",
                          parser.keys[i]);
}

Test(manpage, every_key_in_tarry_conf_5_is_one_the_parser_knows)
{
        static struct keyset parser, man;
        parser_keys(&parser);
        man_keys(&man);
        for (size_t i = 0; i < man.n; i++)
                cr_expect(has(&parser, man.keys[i]),
                          "tarry.conf(5) documents [%s], which the parser does not know",
                          man.keys[i]);
}
