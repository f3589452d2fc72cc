// edged-monitor: shared declarations. One concern per file: config.c (parsing), log.c (CRI log writer),
// child.c (container init before exec), security.c (user, capabilities, seccomp), sandbox.c, exec.c, main.c.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MAX_ARGS 1024
#define MAX_MOUNTS 128
#define MAX_GROUPS 64
#define MAX_CGROUPS 8
#define MAX_DEVICES 64

struct mount_spec {
    const char *src;
    const char *dst;
    int ro;
};

// A host device node bind-mounted onto an empty file under the container's /dev (after the /dev tmpfs is set up).
struct device_spec {
    const char *src;
    const char *dst;
};

/// The monitor's view of one container, parsed from `<stateDir>/config` (NUL-terminated `key=value` records).
struct config {
    const char *id;  // "namespace/pod/container", used in messages
    const char *rootfs, *lowerdir, *upperdir, *workdir;
    const char *argv[MAX_ARGS + 1];
    int argc;
    const char *env[MAX_ARGS + 1];
    int envc;
    const char *cwd;
    uid_t uid;
    gid_t gid;
    gid_t groups[MAX_GROUPS];
    int ngroups;
    uint64_t caps;
    int privileged, readonly_rootfs, nnp, seccomp;
    const char *netns, *ipcns, *utsns;
    struct mount_spec mounts[MAX_MOUNTS];
    int nmounts;
    struct device_spec devices[MAX_DEVICES];
    int ndevices;
    const char *cgroups[MAX_CGROUPS];
    int ncgroups;
    const char *log_path;
    long long log_max_bytes;
    int log_max_files;
    // The container's /proc/self/oom_score_adj (-1000...1000); NULL: 0. The monitor keeps edged's value (the unit's
    // OOMScoreAdjust=-999, like containerd's shims keep containerd's), which a container must not inherit.
    const char *oom_score_adj;
};

// config.c
int config_load(const char *path, struct config *c, char *err, size_t errlen);

// util (main.c)
long long now_ns(void);
int write_file_atomic(const char *path, const char *data, size_t len);
int mkdir_p(const char *path, mode_t mode);
unsigned long long proc_starttime(pid_t pid);
int write_cgroup_procs(const struct config *c, pid_t pid, char *err, size_t errlen);
// Writes VALUE to /proc/self/oom_score_adj. Returns 0 or -1 with err set.
int set_oom_score_adj(const char *value, char *err, size_t errlen);

// log.c
struct log_writer;
void log_open(const char *path, long long max_bytes, int max_files);
void log_pump(int out_fd, int err_fd);

// child.c: never returns; reports failures on errfd and exits 127.
void child_main(const struct config *c, int syncfd, int errfd, int outfd, int errout) __attribute__((noreturn));

// security.c: bounding set, seccomp, groups/uid/gid, capabilities, no_new_privs. Returns 0 or -1 with err set.
int apply_security(const struct config *c, char *err, size_t errlen);
int last_cap(void);
// Looks argv0 up on the container's PATH and execs it; returns only on failure with err set.
void exec_container(const struct config *c, char *err, size_t errlen);

// sandbox.c / exec.c
int sandbox_main(int argc, char **argv);
int exec_main(int argc, char **argv);
