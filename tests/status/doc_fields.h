/* tests/status/doc_fields.h — does docs/status.md name a field?
 *
 * A field is named when it appears as a word inside a `code span` of
 * docs/status.md: `queue.total`, `until`, `….by_class.CLASS` name queue,
 * total, until, by_class… The page is found through $TARRY_SOURCE_DIR.
 */
#ifndef TARRY_TESTS_DOC_FIELDS_H
#define TARRY_TESTS_DOC_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* Is word named in docs/status.md? */
bool doc_names(const char *word);
/* Every field name of o, recursively (through arrays too), that the page
 * does not name, appended to missing ("a.b, c") as its path. The members of
 * objects keyed by data (by_class: classes, destination_states: states, a
 * "diagnoses" object: codes) are not field names and are not checked; their
 * own names are. Returns how many are missing. */
size_t doc_fields_missing(const json_t *o, char *missing, size_t len);

#endif
