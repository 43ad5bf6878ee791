/* tests/smtpc/pool-worker.c — the delivery worker the pool tests spawn.
 *
 * usage: pool-worker -C FILE   (socket on fd 3), as tarryd --smtp-worker -C FILE.
 */
#include <stdio.h>
#include <string.h>

#include "smtpc/smtpc.h"

int main(int argc, char **argv)
{
        if (argc != 3 || strcmp(argv[1], "-C") != 0) {
                fprintf(stderr, "usage: pool-worker -C FILE\n");
                return 64;
        }
        return smtpc_worker_main(SMTPC_WORKER_FD, argv[2]);
}
