// edged-monitor: a tiny per-container helper, spawned by edged and living as long as its container.
//
//   edged-monitor run STATE_DIR          start the container described by STATE_DIR/config, detach, pump its
//                                        logs, reap it and record its exit in STATE_DIR/exit
//   edged-monitor sandbox DIR HOSTNAME HOSTNET [CGROUP_DIR...]
//                                        create a pod's net/ipc/uts namespaces, pinned under DIR, from inside
//                                        the CGROUP_DIRs (the pod's sandbox cgroup, charged for them)
//   edged-monitor exec [--tty] STATE_DIR PID -- ARGV...  run ARGV inside running container PID, with the
//                                        stdio it was given (--tty: fd 0 is a pty slave, made the controlling tty)
//
// `run` forks once: the first process only waits for the verdict of the second (started, or failed with the
// message in STATE_DIR/exit) and exits with 0 or 1, so edged learns the outcome without becoming the parent
// of a long-lived process; the second calls setsid() and survives edged being killed.
#include "monitor.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int mkdir_p(const char *path, mode_t mode) {
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
    return 0;
}

// tmp + fsync + rename + fsync(dir): the record survives power loss whole or not at all.
int write_file_atomic(const char *path, const char *data, size_t len) {
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { close(fd); return -1; }
        off += (size_t)n;
    }
    if (fsync(fd) < 0 || close(fd) < 0) return -1;
    if (rename(tmp, path) < 0) return -1;
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        int dfd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { fsync(dfd); close(dfd); }
    }
    return 0;
}

unsigned long long proc_starttime(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    // After "comm)": field 3 (state) ... field 22 (starttime).
    int field = 2;
    for (; *p && field < 22; p++)
        if (*p == ' ') field++;
    return strtoull(p, NULL, 10);
}

int set_oom_score_adj(const char *value, char *err, size_t errlen) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    size_t len = strlen(value);
    if (fd < 0 || write(fd, value, len) != (ssize_t)len) {
        snprintf(err, errlen, "set oom_score_adj to %s: %s", value, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int write_cgroup_procs(const struct config *c, pid_t pid, char *err, size_t errlen) {
    char path[4200], num[32];
    int len = snprintf(num, sizeof(num), "%d", (int)pid);
    for (int i = 0; i < c->ncgroups; i++) {
        snprintf(path, sizeof(path), "%s/cgroup.procs", c->cgroups[i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, num, (size_t)len) != len) {
            snprintf(err, errlen, "join cgroup %s: %s", c->cgroups[i], strerror(errno));
            if (fd >= 0) close(fd);
            return -1;
        }
        close(fd);
    }
    return 0;
}

static char state_dir[4096];

// The monitor lives as long as its container, so its resident set is what edged costs per pod. Text pages
// are faulted in without read-around (MADV_RANDOM), and the setup code is dropped before the long log-pump
// phase (MADV_DONTNEED on clean file pages just forgets them; they fault back in if ever needed).
extern char __executable_start[], etext[];

static struct config cfg;

static void text_advise(int advice) {
    uintptr_t s = (uintptr_t)__executable_start & ~(uintptr_t)4095;
    uintptr_t e = ((uintptr_t)etext + 4095) & ~(uintptr_t)4095;
    madvise((void *)s, e - s, advice);
}

// 1 when the kernel's OOM killer killed a process of the container: "oom_kill N" (N > 0) in a cgroup's
// memory.events (v2) or memory.oom_control (v1). Read when the container is reaped and recorded in the exit file:
// the cgroup may be gone by the time edged asks (systemd removes the empty cgroups below edged.service when edged
// stops or restarts; a reboot removes them all).
static int oom_killed(void) {
    static const char *files[] = {"memory.events", "memory.oom_control"};
    for (int i = 0; i < cfg.ncgroups; i++) {
        for (int f = 0; f < 2; f++) {
            char path[4200], buf[2048];
            snprintf(path, sizeof(path), "%s/%s", cfg.cgroups[i], files[f]);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n <= 0) continue;
            buf[n] = 0;
            for (char *line = buf; line && *line;) {
                if (!strncmp(line, "oom_kill ", 9) && atol(line + 9) > 0) return 1;
                char *nl = strchr(line, '\n');
                line = nl ? nl + 1 : NULL;
            }
        }
    }
    return 0;
}

static void write_exit(int code, int sig, int oom, const char *msg) {
    char buf[2048], path[4200];
    char clean[1200] = {0};
    if (msg) {
        snprintf(clean, sizeof(clean), "%s", msg);
        for (char *p = clean; *p; p++)
            if (*p == '\n') *p = ' ';
    }
    int n = snprintf(buf, sizeof(buf), "exitCode=%d\nsignal=%d\nfinishedAt=%lld\n%smessage=%s\n", code, sig,
                     now_ns(), oom ? "oomKilled=1\n" : "", clean);
    snprintf(path, sizeof(path), "%s/exit", state_dir);
    write_file_atomic(path, buf, (size_t)n);
}


static int run_main(const char *dir) {
    snprintf(state_dir, sizeof(state_dir), "%s", dir);
    int verdict[2];
    if (pipe2(verdict, O_CLOEXEC) < 0) return 2;
    pid_t mon = fork();
    if (mon < 0) return 2;
    if (mon > 0) {
        // The short-lived first process: wait for the monitor's verdict ('0' started, '1' failed).
        close(verdict[1]);
        char v = 0;
        ssize_t n;
        do n = read(verdict[0], &v, 1); while (n < 0 && errno == EINTR);
        return n == 1 && v == '0' ? 0 : 1;
    }
    close(verdict[0]);
    setsid();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    if (chdir("/") < 0) { /* keep going: we only use absolute paths */ }

    char err[1024], path[4200];
    snprintf(path, sizeof(path), "%s/config", dir);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        write_exit(128, 0, 0, err);
        if (write(verdict[1], "1", 1) < 0) return 1;
        return 1;
    }
    log_open(cfg.log_path, cfg.log_max_bytes, cfg.log_max_files);
    last_cap();  // read while the host /proc is ours

    int syncp[2], errp[2], outp[2], errout[2];
    if (pipe2(syncp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 ||
        pipe2(errout, O_CLOEXEC) < 0) {
        snprintf(err, sizeof(err), "pipe: %s", strerror(errno));
        goto failed;
    }
    if (unshare(CLONE_NEWPID) < 0) {
        snprintf(err, sizeof(err), "unshare pid namespace: %s", strerror(errno));
        goto failed;
    }
    long long started = now_ns();
    pid_t child = fork();
    if (child < 0) {
        snprintf(err, sizeof(err), "fork: %s", strerror(errno));
        goto failed;
    }
    if (child == 0) {
        close(verdict[1]);
        close(syncp[1]);
        close(errp[0]);
        close(outp[0]);
        close(errout[0]);
        child_main(&cfg, syncp[0], errp[1], outp[1], errout[1]);
    }
    close(syncp[0]);
    close(errp[1]);
    close(outp[1]);
    close(errout[1]);
    if (write_cgroup_procs(&cfg, child, err, sizeof(err)) < 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        goto failed;
    }
    if (write(syncp[1], "G", 1) != 1) {
        snprintf(err, sizeof(err), "start container: %s", strerror(errno));
        goto failed;
    }
    close(syncp[1]);
    // The error pipe closes on a successful exec (CLOEXEC); anything read from it is the failure.
    size_t elen = 0;
    for (;;) {
        ssize_t n = read(errp[0], err + elen, sizeof(err) - 1 - elen);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        elen += (size_t)n;
        if (elen >= sizeof(err) - 1) break;
    }
    err[elen] = 0;
    close(errp[0]);
    if (elen > 0) {
        waitpid(child, NULL, 0);
        goto failed;
    }
    {
        char st[512];
        int n = snprintf(st, sizeof(st), "monitorPid=%d\ncontainerPid=%d\nstartedAt=%lld\ncontainerStartTicks=%llu\n"
                                         "monitorStartTicks=%llu\n",
                         (int)getpid(), (int)child, started, proc_starttime(child), proc_starttime(getpid()));
        snprintf(path, sizeof(path), "%s/state", dir);
        if (write_file_atomic(path, st, (size_t)n) < 0) {
            snprintf(err, sizeof(err), "write %s: %s", path, strerror(errno));
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            goto failed;
        }
    }
    if (write(verdict[1], "0", 1) < 0) { /* edged went away; keep running */ }
    close(verdict[1]);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (devnull > 2) close(devnull);
    }
    text_advise(MADV_DONTNEED);
    log_pump(outp[0], errout[0]);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(status))
        write_exit(128 + WTERMSIG(status), WTERMSIG(status), WTERMSIG(status) == SIGKILL && oom_killed(), NULL);
    else write_exit(WEXITSTATUS(status), 0, 0, NULL);
    return 0;

failed:
    write_exit(128, 0, 0, err);
    if (write(verdict[1], "1", 1) < 0) return 1;
    return 1;
}

int main(int argc, char **argv) {
    text_advise(MADV_RANDOM);
    if (argc >= 3 && !strcmp(argv[1], "run")) return run_main(argv[2]);
    if (argc >= 2 && !strcmp(argv[1], "sandbox")) return sandbox_main(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "exec")) return exec_main(argc - 2, argv + 2);
    fprintf(stderr, "usage: edged-monitor run STATE_DIR | sandbox DIR HOSTNAME HOSTNET [CGROUP_DIR...] | exec [--tty] STATE_DIR PID -- ARGV\n");
    return 2;
}
