// Linux and glibc calls that Swift's Glibc module does not import (GNU extensions, raw system calls), called
// directly so that they link into the static binaries too. They used to be looked up with dlsym(RTLD_DEFAULT),
// which finds nothing in a static executable: there every child then inherited edged's sockets (SwiftNIO's are
// not close-on-exec), so the monitors kept the kubelet API and hub ports bound across an edged restart.
#ifndef EDGED_CLINUX_SHIM_H
#define EDGED_CLINUX_SHIM_H

#include <spawn.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture (Linux 5.3) */
#endif

// glibc >= 2.34 (spawn.h declares it only with _GNU_SOURCE/__USE_MISC).
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);
extern int pipe2(int pipefd[2], int flags);
extern int setns(int fd, int nstype);

/// pidfd_open(2): a descriptor that becomes readable when `pid` exits; -1 with errno (ENOSYS before Linux 5.3).
static inline int edged_pidfd_open(pid_t pid, unsigned int flags) {
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

#endif
