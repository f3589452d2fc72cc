// The container's init side, between fork and exec: namespaces, rootfs, /proc /sys /dev, pivot_root, masks,
// then security and exec. Any failure is written to the error pipe as one clear message; exit 127.
#include "monitor.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int err_fd = -1;

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(msg) - 1) n = sizeof(msg) - 1;
    if (n > 0 && write(err_fd, msg, (size_t)n) < 0) { /* nothing left to report to */ }
    _exit(127);
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
    if (mount(src, dst, type, flags, data) < 0)
        fail("mount %s on %s: %s", type ? type : (src ? src : "(remount)"), dst, strerror(errno));
}

static void path_in(char *out, size_t len, const char *root, const char *p) {
    snprintf(out, len, "%s/%s", root, p[0] == '/' ? p + 1 : p);
}

// Creates the mount point for `src` at `dst`: a directory, or an empty file when the source is not one.
static void make_target(const char *src, const char *dst) {
    struct stat st;
    int is_dir = stat(src, &st) < 0 || S_ISDIR(st.st_mode);
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", dst);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        if (mkdir_p(parent, 0755) < 0) fail("mkdir %s: %s", parent, strerror(errno));
    }
    if (is_dir) {
        if (mkdir_p(dst, 0755) < 0) fail("mkdir %s: %s", dst, strerror(errno));
    } else {
        int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EISDIR) fail("create %s: %s", dst, strerror(errno));
        if (fd >= 0) close(fd);
    }
}

static void join_ns(const char *path, int type) {
    if (!path || !*path) return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("open namespace %s: %s", path, strerror(errno));
    if (setns(fd, type) < 0) fail("setns %s: %s", path, strerror(errno));
    close(fd);
}

// `nodev` (MS_NODEV for a non-privileged container, else 0): the standard nodes below are bind mounts of the host's
// (which keep the host mount's flags), so the tmpfs itself needs no device nodes; with nodev one made there with
// mknod cannot be opened.
static void setup_dev(const char *root, unsigned long nodev) {
    char p[4200], q[4200];
    path_in(p, sizeof(p), root, "/dev");
    mkdir_p(p, 0755);
    do_mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_STRICTATIME | nodev, "mode=755,size=65536k");
    static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < 6; i++) {
        snprintf(q, sizeof(q), "/dev/%s", nodes[i]);
        path_in(p, sizeof(p), root, q);
        int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0) fail("create %s: %s", p, strerror(errno));
        close(fd);
        do_mount(q, p, NULL, MS_BIND, NULL);
    }
    path_in(p, sizeof(p), root, "/dev/pts");
    mkdir_p(p, 0755);
    do_mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    path_in(p, sizeof(p), root, "/dev/shm");
    mkdir_p(p, 01777);
    do_mount("shm", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    path_in(p, sizeof(p), root, "/dev/mqueue");
    mkdir_p(p, 0755);
    do_mount("mqueue", p, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    static const char *const links[][2] = {{"/proc/self/fd", "fd"},       {"/proc/self/fd/0", "stdin"},
                                           {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
                                           {"pts/ptmx", "ptmx"},          {"/proc/kcore", "core"}};
    for (size_t i = 0; i < 6; i++) {
        snprintf(q, sizeof(q), "/dev/%s", links[i][1]);
        path_in(p, sizeof(p), root, q);
        if (symlink(links[i][0], p) < 0 && errno != EEXIST) fail("symlink %s: %s", p, strerror(errno));
    }
}

// Host device nodes (GPUs): each is bind-mounted onto an empty file in the new /dev, so the container sees the
// host's node with its major/minor numbers. Only character devices are accepted.
static void setup_devices(const struct config *c, const char *root) {
    char p[4200];
    for (int i = 0; i < c->ndevices; i++) {
        const struct device_spec *d = &c->devices[i];
        struct stat st;
        if (stat(d->src, &st) < 0) fail("device %s: %s", d->src, strerror(errno));
        if (!S_ISCHR(st.st_mode)) fail("device %s is not a character device", d->src);
        if (strncmp(d->dst, "/dev/", 5) != 0 || strstr(d->dst, "..")) fail("device path %s must be below /dev", d->dst);
        path_in(p, sizeof(p), root, d->dst);
        make_target(d->src, p);
        do_mount(d->src, p, NULL, MS_BIND, NULL);
    }
}

// runc's default masked and read-only paths, applied after pivot_root.
static void mask_paths(void) {
    static const char *const masked[] = {"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                                         "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                                         "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap", NULL};
    static const char *const readonly[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
                                           NULL};
    for (int i = 0; masked[i]; i++) {
        struct stat st;
        if (stat(masked[i], &st) < 0) continue;
        if (S_ISDIR(st.st_mode)) do_mount("tmpfs", masked[i], "tmpfs", MS_RDONLY, "size=0");
        else do_mount("/dev/null", masked[i], NULL, MS_BIND, NULL);
    }
    for (int i = 0; readonly[i]; i++) {
        if (access(readonly[i], F_OK) < 0) continue;
        do_mount(readonly[i], readonly[i], NULL, MS_BIND | MS_REC, NULL);
        do_mount(NULL, readonly[i], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    }
}

void child_main(const struct config *c, int syncfd, int errfd, int outfd, int errout) {
    err_fd = errfd;
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(outfd, 1) < 0 || dup2(errout, 2) < 0)
        fail("set up stdio: %s", strerror(errno));
    if (devnull > 2) close(devnull);
    char oomerr[256];
    if (set_oom_score_adj(c->oom_score_adj ? c->oom_score_adj : "0", oomerr, sizeof(oomerr)) < 0) fail("%s", oomerr);
    char go = 0;
    ssize_t n;
    do n = read(syncfd, &go, 1); while (n < 0 && errno == EINTR);
    if (n != 1 || go != 'G') _exit(127);  // the monitor gave up (and recorded why)
    close(syncfd);

    join_ns(c->netns, CLONE_NEWNET);
    join_ns(c->ipcns, CLONE_NEWIPC);
    join_ns(c->utsns, CLONE_NEWUTS);
    if (unshare(CLONE_NEWNS) < 0) fail("unshare mount namespace: %s", strerror(errno));
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);

    const char *root = c->rootfs;
    if (!root || !c->lowerdir) fail("%s: no root filesystem configured", c->id);
    char opts[8192];
    if (c->upperdir && *c->upperdir)
        snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", c->lowerdir, c->upperdir, c->workdir);
    else
        snprintf(opts, sizeof(opts), "lowerdir=%s", c->lowerdir);
    // edged sets up no device cgroup or device BPF filter, so what keeps a non-privileged container away from the
    // host's disks is that no file system it can write or that an image brings allows device nodes (nodev): the
    // root file system, /dev's tmpfs and every volume. Only the standard nodes (bind mounts from the host's /dev)
    // and the devices handed to it (GPUs) open. Like containerd's default device list, hostPath device nodes need a
    // privileged container.
    unsigned long nodev = c->privileged ? 0 : MS_NODEV;
    if (mount("overlay", root, "overlay", nodev, opts) < 0) fail("mount overlay on %s: %s", root, strerror(errno));

    char p[4200];
    for (int i = 0; i < c->nmounts; i++) {
        const struct mount_spec *m = &c->mounts[i];
        path_in(p, sizeof(p), root, m->dst);
        make_target(m->src, p);
        if (mount(m->src, p, NULL, MS_BIND | MS_REC, NULL) < 0)
            fail("bind mount %s on %s: %s", m->src, m->dst, strerror(errno));
        if (m->ro || nodev) do_mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | (m->ro ? MS_RDONLY : 0) | nodev, NULL);
    }
    path_in(p, sizeof(p), root, "/proc");
    mkdir_p(p, 0555);
    do_mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    path_in(p, sizeof(p), root, "/sys");
    mkdir_p(p, 0555);
    unsigned long sysflags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (c->privileged ? 0 : MS_RDONLY);
    if (mount("sysfs", p, "sysfs", sysflags, NULL) < 0) {
        // Joining the host network namespace: sysfs cannot be mounted fresh, bind the host's.
        do_mount("/sys", p, NULL, MS_BIND | MS_REC, NULL);
        if (!c->privileged) do_mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
    }
    setup_dev(root, nodev);
    setup_devices(c, root);

    if (chdir(root) < 0) fail("chdir %s: %s", root, strerror(errno));
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail("pivot_root %s: %s", root, strerror(errno));
    if (umount2(".", MNT_DETACH) < 0) fail("unmount old root: %s", strerror(errno));
    if (chdir("/") < 0) fail("chdir /: %s", strerror(errno));
    if (c->readonly_rootfs) do_mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
    if (!c->privileged) mask_paths();

    if (chdir(c->cwd) < 0) {
        if (errno != ENOENT || mkdir_p(c->cwd, 0755) < 0 || chdir(c->cwd) < 0)
            fail("chdir to cwd (\"%s\") set in config: %s", c->cwd, strerror(errno));
    }
    char err[1024];
    if (apply_security(c, err, sizeof(err)) < 0) fail("%s", err);
    // The container dies with its monitor: edged then reports the container as exited/Unknown.
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    exec_container(c, err, sizeof(err));
    fail("%s", err);
}
