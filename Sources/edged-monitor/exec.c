// exec: runs ARGV inside a running container: joins its cgroups and namespaces (through /proc/PID), then forks
// (so the command is inside the pid namespace) and applies the container's user, capabilities and seccomp.
// stdin, stdout and stderr are passed through as edged gave them (probes: /dev/null and one pipe; kubectl exec:
// three pipes, or a pty slave on all three with --tty). With --tty the command starts a new session and takes
// fd 0 as its controlling terminal (edged opens the pty from the container's own devpts, so `tty` names it).
// The exit status is the command's (128+signal if killed); 125 means the exec could not be set up.
#include "monitor.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static struct config cfg;

int exec_main(int argc, char **argv) {
    int tty = 0;
    if (argc >= 1 && !strcmp(argv[0], "--tty")) {
        tty = 1;
        argc--;
        argv++;
    }
    if (argc < 4 || strcmp(argv[2], "--")) {
        fprintf(stderr, "usage: edged-monitor exec [--tty] STATE_DIR PID -- ARGV...\n");
        return 125;
    }
    char err[1024], path[4200];
    snprintf(path, sizeof(path), "%s/config", argv[0]);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 125;
    }
    int pid = atoi(argv[1]);
    cfg.argc = 0;
    for (int i = 3; i < argc && cfg.argc < MAX_ARGS; i++) cfg.argv[cfg.argc++] = argv[i];
    cfg.argv[cfg.argc] = NULL;
    last_cap();

    static const struct { const char *name; int type; } kinds[] = {
        {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET}, {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS}};
    int fds[5];
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, kinds[i].name);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) {
            fprintf(stderr, "open %s: %s\n", path, strerror(errno));
            return 125;
        }
    }
    snprintf(path, sizeof(path), "/proc/%d/root", pid);
    int rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        return 125;
    }
    if (write_cgroup_procs(&cfg, getpid(), err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 125;
    }
    // The exec'd process gets the container's OOM score adjustment, not edged's (inherited through the monitor).
    char adj[16] = "0";
    snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", pid);
    int adjfd = open(path, O_RDONLY | O_CLOEXEC);
    if (adjfd >= 0) {
        ssize_t an = read(adjfd, adj, sizeof(adj) - 1);
        close(adjfd);
        adj[an > 0 ? an : 0] = 0;
        if (an <= 0) snprintf(adj, sizeof(adj), "0");
        char *nl = strchr(adj, '\n');
        if (nl) *nl = 0;
    }
    if (set_oom_score_adj(adj, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 125;
    }
    for (int i = 0; i < 5; i++) {
        if (setns(fds[i], kinds[i].type) < 0) {
            fprintf(stderr, "setns %s of pid %d: %s\n", kinds[i].name, pid, strerror(errno));
            return 125;
        }
        close(fds[i]);
    }
    if (fchdir(rootfd) < 0 || chroot(".") < 0) {
        fprintf(stderr, "enter container root: %s\n", strerror(errno));
        return 125;
    }
    close(rootfd);
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        return 125;
    }
    if (child == 0) {
        if (tty && (setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0)) {
            fprintf(stderr, "make fd 0 the controlling terminal: %s\n", strerror(errno));
            _exit(126);
        }
        if (chdir(cfg.cwd) < 0 && chdir("/") < 0) _exit(126);
        if (apply_security(&cfg, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s\n", err);
            _exit(126);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        exec_container(&cfg, err, sizeof(err));
        fprintf(stderr, "%s\n", err);
        _exit(errno == ENOENT ? 127 : 126);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}
