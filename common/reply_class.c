/* common/reply_class.c — class names; see reply_class.h. */
#include "common/reply_class.h"

#include <errno.h>
#include <string.h>

static const char *const names[CLASS__MAX] = {
    [CLASS_GREYLIST] = "greylist",
    [CLASS_REPUTATION] = "reputation",
    [CLASS_RATE_LIMIT] = "rate_limit",
    [CLASS_OVERLOAD] = "overload",
    [CLASS_MAILBOX_FULL] = "mailbox_full",
    [CLASS_ROUTING] = "routing",
    [CLASS_POLICY] = "policy",
    [CLASS_UNKNOWN_TEMP] = "unknown_temp",
    [CLASS_PERMANENT] = "permanent",
};

const char *reply_class_name(enum reply_class c)
{
        if ((unsigned)c >= CLASS__MAX)
                return NULL;
        return names[c];
}

int reply_class_from_name(const char *s)
{
        for (int i = 0; i < CLASS__MAX; i++)
                if (strcmp(names[i], s) == 0)
                        return i;
        return -EINVAL;
}
