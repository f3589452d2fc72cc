// Parses the monitor config written by edged: a sequence of NUL-terminated "key=value" records.
#include "monitor.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Static so that the monitor makes no large heap allocation; untouched pages cost no RSS.
static char buf[1 << 20];

int config_load(const char *path, struct config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof(*c));
    c->id = "container";
    c->cwd = "/";
    c->log_max_files = 2;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            snprintf(err, errlen, "read %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (n == 0) break;
        len += (size_t)n;
        if (len >= sizeof(buf) - 1) {
            snprintf(err, errlen, "%s: config too large", path);
            close(fd);
            return -1;
        }
    }
    close(fd);
    buf[len] = 0;
    struct mount_spec *m = NULL;
    struct device_spec *d = NULL;
    for (size_t off = 0; off < len;) {
        char *key = buf + off;
        size_t rlen = strlen(key);
        off += rlen + 1;
        char *eq = strchr(key, '=');
        if (!eq) continue;
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(key, "id")) c->id = v;
        else if (!strcmp(key, "rootfs")) c->rootfs = v;
        else if (!strcmp(key, "lowerdir")) c->lowerdir = v;
        else if (!strcmp(key, "upperdir")) c->upperdir = v;
        else if (!strcmp(key, "workdir")) c->workdir = v;
        else if (!strcmp(key, "arg")) { if (c->argc < MAX_ARGS) c->argv[c->argc++] = v; }
        else if (!strcmp(key, "env")) { if (c->envc < MAX_ARGS) c->env[c->envc++] = v; }
        else if (!strcmp(key, "cwd")) c->cwd = v;
        else if (!strcmp(key, "uid")) c->uid = (uid_t)strtoul(v, NULL, 10);
        else if (!strcmp(key, "gid")) c->gid = (gid_t)strtoul(v, NULL, 10);
        else if (!strcmp(key, "group")) { if (c->ngroups < MAX_GROUPS) c->groups[c->ngroups++] = (gid_t)strtoul(v, NULL, 10); }
        else if (!strcmp(key, "caps")) c->caps = strtoull(v, NULL, 16);
        else if (!strcmp(key, "privileged")) c->privileged = atoi(v);
        else if (!strcmp(key, "readonly")) c->readonly_rootfs = atoi(v);
        else if (!strcmp(key, "nnp")) c->nnp = atoi(v);
        else if (!strcmp(key, "seccomp")) c->seccomp = atoi(v);
        else if (!strcmp(key, "netns")) c->netns = v;
        else if (!strcmp(key, "ipcns")) c->ipcns = v;
        else if (!strcmp(key, "utsns")) c->utsns = v;
        else if (!strcmp(key, "mount_src")) {
            if (c->nmounts < MAX_MOUNTS) { m = &c->mounts[c->nmounts++]; m->src = v; m->dst = "/"; m->ro = 0; }
            else m = NULL;
        }
        else if (!strcmp(key, "mount_dst")) { if (m) m->dst = v; }
        else if (!strcmp(key, "mount_ro")) { if (m) m->ro = atoi(v); }
        else if (!strcmp(key, "dev_src")) {
            if (c->ndevices < MAX_DEVICES) { d = &c->devices[c->ndevices++]; d->src = v; d->dst = v; }
            else d = NULL;
        }
        else if (!strcmp(key, "dev_dst")) { if (d) d->dst = v; }
        else if (!strcmp(key, "cgroup")) { if (c->ncgroups < MAX_CGROUPS) c->cgroups[c->ncgroups++] = v; }
        else if (!strcmp(key, "log")) c->log_path = v;
        else if (!strcmp(key, "logmax")) c->log_max_bytes = strtoll(v, NULL, 10);
        else if (!strcmp(key, "logfiles")) c->log_max_files = atoi(v);
        else if (!strcmp(key, "oomScoreAdj")) c->oom_score_adj = v;
    }
    c->argv[c->argc] = NULL;
    c->env[c->envc] = NULL;
    if (c->argc == 0) {
        snprintf(err, errlen, "%s: no command given", c->id);
        return -1;
    }
    return 0;
}
