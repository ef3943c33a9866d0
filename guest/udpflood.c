/*
 * udpflood HOST PORT [SIZE]: send UDP datagrams of SIZE bytes (default
 * 1400) to HOST:PORT as fast as the guest can, for ever.  The test guest's
 * busybox nc has no UDP; the held-output cap test needs a guest whose
 * output the network does not slow down (TCP would).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_in to = { .sin_family = AF_INET };
    static char buf[65507];
    size_t size = argc > 3 ? strtoul(argv[3], NULL, 0) : 1400;
    unsigned long n = 0;
    int fd;

    if (argc < 3 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1 ||
        size == 0 || size > sizeof(buf)) {
        fprintf(stderr, "usage: udpflood HOST PORT [SIZE]\n");
        return 2;
    }
    to.sin_port = htons(atoi(argv[2]));
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    memset(buf, 'U', sizeof(buf));
    for (;;) {
        memcpy(buf, &n, sizeof(n));
        if (sendto(fd, buf, size, 0, (struct sockaddr *)&to,
                   sizeof(to)) < 0) {
            usleep(1000);   /* ENOBUFS and the like: try again */
        }
        n++;
    }
}
