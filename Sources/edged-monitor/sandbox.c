// Pod sandbox: new ipc+uts (and net unless host network) namespaces, pinned by bind-mounting
// /proc/self/ns/{net,ipc,uts} onto files in DIR, so containers of the pod can join them after we exit.
// With CGROUP_DIRs it first joins those cgroups (the pod's sandbox cgroup): the kernel charges a namespace's memory
// to the cgroup of the process that creates it, ~250 KB for a network namespace, which belongs to the pod (where
// Kubernetes' pod overhead puts it), not to edged's own share.
#include "monitor.h"
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what, const char *path) {
    fprintf(stderr, "%s %s: %s\n", what, path, strerror(errno));
    return 1;
}

static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
    return rc;
}

int sandbox_main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: edged-monitor sandbox DIR HOSTNAME HOSTNET(0|1) [CGROUP_DIR...]\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        char procs[4200];
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", argv[i]);
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0) return die("join cgroup", argv[i]);
        int ok = write(fd, "0", 1) == 1;
        int e = errno;
        close(fd);
        errno = e;
        if (!ok) return die("join cgroup", argv[i]);
    }
    const char *dir = argv[0], *hostname = argv[1];
    int hostnet = atoi(argv[2]);
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", dir);
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent) {
        fprintf(stderr, "sandbox dir %s needs a parent\n", dir);
        return 2;
    }
    *slash = 0;
    if (mkdir_p(parent, 0700) < 0) return die("mkdir", parent);
    // Like `ip netns`: the parent is a private bind mount of itself, so the pins do not propagate.
    if (mount(NULL, parent, NULL, MS_PRIVATE | MS_REC, NULL) < 0) {
        if (errno != EINVAL) return die("make private", parent);
        if (mount(parent, parent, NULL, MS_BIND | MS_REC, NULL) < 0) return die("bind mount", parent);
        if (mount(NULL, parent, NULL, MS_PRIVATE | MS_REC, NULL) < 0) return die("make private", parent);
    }
    if (mkdir_p(dir, 0700) < 0) return die("mkdir", dir);
    int flags = CLONE_NEWIPC | CLONE_NEWUTS | (hostnet ? 0 : CLONE_NEWNET);
    if (unshare(flags) < 0) return die("unshare namespaces for", dir);
    if (sethostname(hostname, strlen(hostname)) < 0) return die("sethostname", hostname);
    if (!hostnet && loopback_up() < 0) return die("bring up loopback in", dir);
    static const char *const kinds[] = {"net", "ipc", "uts"};
    for (int i = hostnet ? 1 : 0; i < 3; i++) {
        char src[64], dst[4200];
        snprintf(src, sizeof(src), "/proc/self/ns/%s", kinds[i]);
        snprintf(dst, sizeof(dst), "%s/%s", dir, kinds[i]);
        int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0444);
        if (fd < 0) return die("create", dst);
        close(fd);
        if (mount(src, dst, NULL, MS_BIND, NULL) < 0) return die("pin namespace on", dst);
    }
    return 0;
}
