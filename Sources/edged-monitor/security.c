// Process security applied right before exec: bounding set, seccomp, user/groups, capabilities, no_new_privs.
// Order matters: the seccomp filter is loaded while still privileged (so it needs no no_new_privs), and the
// default profile allows the setuid/capset calls that follow it.
#include "monitor.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CAP_BIT(n) (1ULL << (n))

int last_cap(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    char b[16] = {0};
    if (fd >= 0) {
        if (read(fd, b, sizeof(b) - 1) < 0) b[0] = 0;
        close(fd);
    }
    cached = b[0] ? atoi(b) : 40;
    return cached;
}

// The allow-list of the common container default profile (moby/containerd default.json).
static const char *const allowed[] = {
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve",
    "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl",
    "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
    "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue",
    "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid",
    "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
    "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
    "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
    "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat",
    "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "pselect6", "pselect6_time64", "ptrace", "process_vm_readv", "process_vm_writev",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat", "renameat2",
    "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget",
    "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
    "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
    "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socket", "socketcall",
    "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev", "arch_prctl", "modify_ldt",
    NULL};

// Syscalls the profile only allows when the container holds the named capability.
static const struct { int cap; const char *const names[12]; } by_cap[] = {
    {CAP_SYS_ADMIN, {"bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                     "lookup_dcookie", "mount", "mount_setattr", NULL}},
    {CAP_SYS_ADMIN, {"move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
                     "sethostname", "setns", "syslog", "umount", "umount2", "unshare"}},
    {CAP_SYS_BOOT, {"reboot", NULL}},
    {CAP_SYS_CHROOT, {"chroot", NULL}},
    {CAP_SYS_MODULE, {"delete_module", "init_module", "finit_module", NULL}},
    {CAP_SYS_PACCT, {"acct", NULL}},
    {CAP_SYS_PTRACE, {"kcmp", "pidfd_getfd", "process_madvise", NULL}},
    {CAP_SYS_RAWIO, {"iopl", "ioperm", NULL}},
    {CAP_SYS_TIME, {"settimeofday", "stime", "clock_settime", "clock_settime64", NULL}},
    {CAP_SYS_TTY_CONFIG, {"vhangup", NULL}},
    {CAP_SYS_NICE, {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node", NULL}},
    {CAP_SYSLOG, {"syslog", NULL}},
    {CAP_BPF, {"bpf", NULL}},
    {CAP_PERFMON, {"perf_event_open", NULL}},
};

static int allow(scmp_filter_ctx ctx, const char *name) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return 0;  // unknown to this libseccomp/arch: nothing to allow
    return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
}

static int load_seccomp(uint64_t caps, char *err, size_t errlen) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx) {
        snprintf(err, errlen, "seccomp_init failed");
        return -1;
    }
    // We load while still privileged; do not let libseccomp force no_new_privs on the container.
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    int rc = 0;
    for (int i = 0; allowed[i] && rc == 0; i++) rc = allow(ctx, allowed[i]);
    for (size_t i = 0; i < sizeof(by_cap) / sizeof(by_cap[0]) && rc == 0; i++) {
        if (!(caps & CAP_BIT(by_cap[i].cap))) continue;
        for (int j = 0; j < 12 && by_cap[i].names[j] && rc == 0; j++) rc = allow(ctx, by_cap[i].names[j]);
    }
    if (rc == 0) {
        // personality: only the harmless personas.
        static const unsigned long personas[] = {0x0, 0x8, 0x20008, 0xffffffff};
        for (size_t i = 0; i < 4 && rc == 0; i++)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1, SCMP_A0(SCMP_CMP_EQ, personas[i]));
    }
    if (rc == 0 && !(caps & CAP_BIT(CAP_SYS_ADMIN))) {
        // Plain clone without namespace flags; clone3 answers ENOSYS so libc falls back to clone.
        const uint64_t ns = 0x7E020000ULL;  // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, ns, 0));
        if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    }
    if (rc == 0) rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0) {
        snprintf(err, errlen, "load seccomp profile: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

static int set_caps(uint64_t caps) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    // Never ask for more than we hold (edged itself may lack some, e.g. CAP_SYS_RESOURCE).
    if (syscall(SYS_capget, &h, d) == 0) caps &= ((uint64_t)d[1].permitted << 32) | d[0].permitted;
    memset(d, 0, sizeof(d));
    d[0].effective = d[0].permitted = (uint32_t)caps;
    d[1].effective = d[1].permitted = (uint32_t)(caps >> 32);
    return (int)syscall(SYS_capset, &h, d);
}

int apply_security(const struct config *c, char *err, size_t errlen) {
    int last = last_cap();
    uint64_t caps = c->caps;
    for (int i = 0; i <= last; i++) {
        if (caps & CAP_BIT(i)) continue;
        if (prctl(PR_CAPBSET_DROP, i, 0, 0, 0) < 0 && errno != EINVAL) {
            snprintf(err, errlen, "drop capability %d from bounding set: %s", i, strerror(errno));
            return -1;
        }
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (c->nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        snprintf(err, errlen, "set no_new_privs: %s", strerror(errno));
        return -1;
    }
    if (c->seccomp && !c->privileged && load_seccomp(caps, err, errlen) < 0) return -1;
    if (setgroups((size_t)c->ngroups, c->groups) < 0) {
        snprintf(err, errlen, "setgroups: %s", strerror(errno));
        return -1;
    }
    if (setresgid(c->gid, c->gid, c->gid) < 0) {
        snprintf(err, errlen, "setgid %u: %s", c->gid, strerror(errno));
        return -1;
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 || setresuid(c->uid, c->uid, c->uid) < 0) {
        snprintf(err, errlen, "setuid %u: %s", c->uid, strerror(errno));
        return -1;
    }
    if (set_caps(caps) < 0) {
        snprintf(err, errlen, "capset: %s", strerror(errno));
        return -1;
    }
    return 0;
}

extern char **environ;

void exec_container(const struct config *c, char *err, size_t errlen) {
    const char *file = c->argv[0];
    environ = (char **)c->env;
    if (strchr(file, '/')) {
        execv(file, (char *const *)c->argv);
        snprintf(err, errlen, "exec %s: %s", file, strerror(errno));
        return;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    char cand[4096];
    int saved = ENOENT;
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(cand, sizeof(cand), "%.*s/%s", (int)n, path, file);
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
            execv(cand, (char *const *)c->argv);
            saved = errno;
            snprintf(err, errlen, "exec %s: %s", cand, strerror(saved));
            return;
        }
        path = colon ? colon + 1 : path + n;
    }
    snprintf(err, errlen, "exec: \"%s\": executable file not found in $PATH", file);
}
