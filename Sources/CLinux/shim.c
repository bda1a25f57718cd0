// The few CLinux helpers that need _GNU_SOURCE (kept out of the header, where it would break accept4 in Swift).
#define _GNU_SOURCE
#include <sys/socket.h>
#include "CLinux.h"

int cl_peer_uid(int fd, unsigned int *uid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -1;
    *uid = cred.uid;
    return 0;
}

int cl_peer_pid(int fd, int *pid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -1;
    *pid = cred.pid;
    return 0;
}
