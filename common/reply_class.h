/* common/reply_class.h — the names of the deferral classes.
 *
 * Shared vocabulary between config/ (which reads [retry.CLASS] sections),
 * scheduler/ (which assigns classes) and everything that prints them.
 */
#ifndef TARRY_COMMON_REPLY_CLASS_H
#define TARRY_COMMON_REPLY_CLASS_H

enum reply_class {
        CLASS_GREYLIST,
        CLASS_REPUTATION,
        CLASS_RATE_LIMIT,
        CLASS_OVERLOAD,
        CLASS_MAILBOX_FULL,
        CLASS_ROUTING,
        CLASS_POLICY,
        CLASS_UNKNOWN_TEMP,
        CLASS_PERMANENT,
        CLASS__MAX,
};

/* "greylist", "reputation", ... ; NULL for out-of-range values. */
const char *reply_class_name(enum reply_class c);

/* The class named s, or -EINVAL. */
int reply_class_from_name(const char *s);

#endif
