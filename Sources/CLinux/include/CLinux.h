// Linux APIs that Glibc does not export cleanly to Swift: epoll, signalfd, eventfd, timerfd,
// accept4, pipe2, prctl, posix_spawn helpers, SCM_RIGHTS (CMSG macros), errno access and syslog
// (a variadic C function, which Swift does not import).
// Deliberately no _GNU_SOURCE here: it breaks accept4's sockaddr argument in Swift.
#ifndef PGSWIFT_CLINUX_H
#define PGSWIFT_CLINUX_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/random.h>
#include <netdb.h>
#include <syslog.h>
#include <time.h>

extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int pipe2(int pipefd[2], int flags);

// SO_PEERCRED uid of a Unix socket peer (shim.c). Returns 0 or -1.
int cl_peer_uid(int fd, unsigned int *uid);
// SO_PEERCRED pid of a Unix socket peer; for a connection to a listener, the process that called listen().
int cl_peer_pid(int fd, int *pid);

static inline int cl_errno(void) { return errno; }

// Fills buf from the kernel's CSPRNG (getrandom(2)); returns 0, or -1 if it could not.
static inline int cl_getrandom(void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = getrandom((char *)buf + done, len - done, 0);
        if (n < 0) { if (errno == EINTR) continue; return -1; }
        done += (size_t)n;
    }
    return 0;
}
static inline void cl_set_errno(int e) { errno = e; }

static inline int cl_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}
static inline int cl_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

// epoll_event is packed on x86_64; give Swift plain accessors.
static inline void cl_epoll_event_set(struct epoll_event *ev, uint32_t events, uint64_t data) {
    ev->events = events;
    ev->data.u64 = data;
}
static inline uint32_t cl_epoll_event_events(const struct epoll_event *ev) { return ev->events; }
static inline uint64_t cl_epoll_event_data(const struct epoll_event *ev) { return ev->data.u64; }
static inline size_t cl_epoll_event_size(void) { return sizeof(struct epoll_event); }

#define CL_CONST(name, value) static inline uint32_t name(void) { return (uint32_t)(value); }
CL_CONST(cl_EPOLLIN, EPOLLIN)
CL_CONST(cl_EPOLLOUT, EPOLLOUT)
CL_CONST(cl_EPOLLERR, EPOLLERR)
CL_CONST(cl_EPOLLHUP, EPOLLHUP)
CL_CONST(cl_EPOLLRDHUP, EPOLLRDHUP)
CL_CONST(cl_EPOLLET, EPOLLET)
CL_CONST(cl_EPOLLEXCLUSIVE, EPOLLEXCLUSIVE)
CL_CONST(cl_EPOLLONESHOT, EPOLLONESHOT)

static inline int cl_SOCK_NONBLOCK(void) { return SOCK_NONBLOCK; }
static inline int cl_SOCK_CLOEXEC(void) { return SOCK_CLOEXEC; }
static inline int cl_SOCK_STREAM(void) { return SOCK_STREAM; }
static inline int cl_SOCK_DGRAM(void) { return SOCK_DGRAM; }
static inline int cl_SOCK_SEQPACKET(void) { return SOCK_SEQPACKET; }
static inline int cl_O_NONBLOCK(void) { return O_NONBLOCK; }
static inline int cl_O_CLOEXEC(void) { return O_CLOEXEC; }
static inline int cl_SFD_NONBLOCK(void) { return SFD_NONBLOCK; }
static inline int cl_SFD_CLOEXEC(void) { return SFD_CLOEXEC; }
static inline int cl_EFD_NONBLOCK(void) { return EFD_NONBLOCK; }
static inline int cl_EFD_CLOEXEC(void) { return EFD_CLOEXEC; }
static inline int cl_TFD_NONBLOCK(void) { return TFD_NONBLOCK; }
static inline int cl_TFD_CLOEXEC(void) { return TFD_CLOEXEC; }
static inline int cl_MSG_NOSIGNAL(void) { return MSG_NOSIGNAL; }
static inline int cl_MSG_DONTWAIT(void) { return MSG_DONTWAIT; }
static inline int cl_MSG_CMSG_CLOEXEC(void) { return MSG_CMSG_CLOEXEC; }
static inline int cl_SO_REUSEPORT(void) { return SO_REUSEPORT; }
static inline int cl_TCP_USER_TIMEOUT(void) { return TCP_USER_TIMEOUT; }
static inline int cl_TCP_KEEPIDLE(void) { return TCP_KEEPIDLE; }
static inline int cl_TCP_KEEPINTVL(void) { return TCP_KEEPINTVL; }
static inline int cl_TCP_KEEPCNT(void) { return TCP_KEEPCNT; }

// Sending and receiving file descriptors over a Unix socket (SCM_RIGHTS).
// Sends `len` bytes plus up to `nfds` descriptors. Returns sendmsg's result.
static inline ssize_t cl_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    char control[CMSG_SPACE(sizeof(int) * 8)];
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    memset(control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        if (nfds > 8) { errno = EINVAL; return -1; }
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

// Receives up to `len` bytes and up to `maxfds` descriptors (marked close-on-exec).
// *nfds receives the number of descriptors. Returns recvmsg's result.
static inline ssize_t cl_recv_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    char control[CMSG_SPACE(sizeof(int) * 8)];
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    *nfds = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) return n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int count = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *src = (int *)CMSG_DATA(cm);
            for (int i = 0; i < count; i++) {
                if (*nfds < maxfds) { fds[(*nfds)++] = src[i]; } else { close(src[i]); }
            }
        }
    }
    return n;
}

// Declared here because spawn.h shows it only under _GNU_SOURCE; weak, so a glibc without it
// (before 2.34) still links and cl_spawn falls back.
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *, int) __attribute__((weak));

// posix_spawn with a cleared signal mask and default dispositions, and the given fds
// dup2'ed onto 3, 4, 5... (fd_count of them); every descriptor above those is closed.
// Returns 0 or an errno value.
static inline int cl_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                           const int *fds, int fd_count) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) { posix_spawn_file_actions_destroy(&fa); return rc; }
    // Park the sources first, above 64 and above every source (so parking one never clobbers another),
    // then dup2 them onto 3.., which can no longer clobber a source either.
    int base = 64;
    for (int i = 0; i < fd_count; i++) {
        if (fds[i] >= base) base = fds[i] + 1;
    }
    for (int i = 0; i < fd_count && rc == 0; i++) {
        rc = posix_spawn_file_actions_adddup2(&fa, fds[i], base + i);
    }
    for (int i = 0; i < fd_count && rc == 0; i++) {
        rc = posix_spawn_file_actions_adddup2(&fa, base + i, 3 + i);
    }
    // Then close everything else: the parked copies, and whatever the supervisor itself inherited
    // without CLOEXEC (a shell's or a test runner's descriptors), so every child holds exactly
    // 0-2 and its own list.
    // glibc before 2.34 lacks closefrom_np: there only the parked copies are closed.
    if (posix_spawn_file_actions_addclosefrom_np != NULL) {
        if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3 + fd_count);
    } else {
        for (int i = 0; i < fd_count && rc == 0; i++) {
            rc = posix_spawn_file_actions_addclose(&fa, base + i);
        }
    }
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &empty);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0) rc = posix_spawn(pid, path, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

static inline int cl_WIFEXITED(int s) { return WIFEXITED(s); }
static inline int cl_WEXITSTATUS(int s) { return WEXITSTATUS(s); }
static inline int cl_WIFSIGNALED(int s) { return WIFSIGNALED(s); }
static inline int cl_WTERMSIG(int s) { return WTERMSIG(s); }

static inline int cl_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0, 0, 0); }

// Shared memory between the supervisor and its workers (the service-wide client count): an anonymous
// memory file passed to each worker as a descriptor, and atomic operations on 64-bit words in it.
#include <sys/mman.h>
#include <sys/syscall.h>
static inline int cl_memfd_create(const char *name) {
    return (int)syscall(SYS_memfd_create, name, 1U /* MFD_CLOEXEC */);
}
static inline void *cl_mmap_shared(int fd, size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}
static inline int64_t cl_atomic_fetch_add_i64(int64_t *p, int64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t cl_atomic_load_i64(int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void cl_atomic_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
/// Stores `desired` if `*p` is `expected`; returns what `*p` held (== expected when it stored).
static inline int64_t cl_atomic_cas_i64(int64_t *p, int64_t expected, int64_t desired) {
    __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

/// syslog(3) of one message, never read as a format.
static inline void cl_syslog(int priority, const char *message) { syslog(priority, "%s", message); }

#endif
