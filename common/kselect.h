/* common/kselect.h — the k smallest of an array of pointers, in linear time.
 *
 * For paging a listing sorted by key: bring the page's elements to the front
 * without sorting everything before and after it (quickselect, median of
 * three; O(n) on average against qsort's O(n log n)).
 */
#ifndef TARRY_COMMON_KSELECT_H
#define TARRY_COMMON_KSELECT_H

#include <stddef.h>

typedef int (*kselect_cmp)(const void *a, const void *b); /* like strcmp, on the elements */

/* Reorder v[0..n) so that v[0..k) hold its k smallest elements (in no
 * particular order) and v[k..n) the rest. k >= n leaves v as it is. */
void kselect_smallest(void **v, size_t n, size_t k, kselect_cmp cmp);

/* Reorder v so that v[from..from+len) are the elements of ranks from..from+len-1
 * in ascending order (the rest in no particular order). Returns how many that
 * is: 0 when from >= n, fewer than len at the end. */
size_t kselect_page(void **v, size_t n, size_t from, size_t len, kselect_cmp cmp);

#endif
