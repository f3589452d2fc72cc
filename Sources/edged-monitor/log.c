// Writes the container's stdout/stderr to a CRI-format log file with size-based rotation:
// "<RFC3339Nano UTC> <stdout|stderr> <F|P> <message>\n", P for a chunk of a line longer than the buffer.
#include "monitor.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 16384

static struct {
    int fd;
    const char *path;
    long long size, max;
    int max_files;
} lw = {.fd = -1};

struct stream {
    int fd;
    const char *name;
    size_t len;
    char buf[LINE_MAX_BYTES];
};

static struct stream streams[2];

static void log_reopen(void) {
    if (lw.fd >= 0) close(lw.fd);
    lw.fd = open(lw.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    struct stat st;
    lw.size = (lw.fd >= 0 && fstat(lw.fd, &st) == 0) ? st.st_size : 0;
}

void log_open(const char *path, long long max_bytes, int max_files) {
    lw.path = path;
    lw.max = max_bytes;
    lw.max_files = max_files < 2 ? 2 : max_files;
    if (!path || !*path) return;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        mkdir_p(dir, 0755);
    }
    log_reopen();
}

static void log_rotate(void) {
    char from[4200], to[4200];
    // Keep max_files-1 rotated files: path.(n-1) is dropped, path.k -> path.(k+1), path -> path.1.
    for (int k = lw.max_files - 2; k >= 1; k--) {
        snprintf(from, sizeof(from), "%s.%d", lw.path, k);
        snprintf(to, sizeof(to), "%s.%d", lw.path, k + 1);
        rename(from, to);
    }
    snprintf(to, sizeof(to), "%s.1", lw.path);
    rename(lw.path, to);
    log_reopen();
}

static void log_record(const char *stream, char tag, const char *msg, size_t len) {
    if (lw.fd < 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char head[96];
    int hl = snprintf(head, sizeof(head), "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ %s %c ", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec, stream, tag);
    struct iovec iov[3] = {{head, (size_t)hl}, {(void *)msg, len}, {"\n", 1}};
    ssize_t n;
    do n = writev(lw.fd, iov, 3); while (n < 0 && errno == EINTR);
    if (n > 0) lw.size += n;
    if (lw.max > 0 && lw.size >= lw.max) log_rotate();
}

// Emits every complete line in s->buf; a full buffer without newline becomes a partial (P) record.
static void flush_lines(struct stream *s, int eof) {
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->buf[i] == '\n') {
            log_record(s->name, 'F', s->buf + start, i - start);
            start = i + 1;
        }
    }
    if (start < s->len && (eof || (start == 0 && s->len == sizeof(s->buf)))) {
        log_record(s->name, eof ? 'F' : 'P', s->buf + start, s->len - start);
        start = s->len;
    }
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
}

void log_pump(int out_fd, int err_fd) {
    streams[0].fd = out_fd;
    streams[0].name = "stdout";
    streams[1].fd = err_fd;
    streams[1].name = "stderr";
    for (;;) {
        struct pollfd p[2];
        int np = 0;
        for (int i = 0; i < 2; i++) {
            if (streams[i].fd >= 0) {
                p[np].fd = streams[i].fd;
                p[np].events = POLLIN;
                p[np].revents = 0;
                np++;
            }
        }
        if (np == 0) return;
        if (poll(p, (nfds_t)np, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int j = 0; j < np; j++) {
            if (!p[j].revents) continue;
            struct stream *s = streams[0].fd == p[j].fd ? &streams[0] : &streams[1];
            ssize_t n = read(s->fd, s->buf + s->len, sizeof(s->buf) - s->len);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (n <= 0) {
                flush_lines(s, 1);
                close(s->fd);
                s->fd = -1;
                continue;
            }
            s->len += (size_t)n;
            flush_lines(s, 0);
        }
    }
}
