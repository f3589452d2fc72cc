// zlib for gzip-compressed layers and archives (apt: zlib1g-dev), plus <sys/xattr.h>, which Glibc's Swift module
// does not export and the layer unpacker needs (overlayfs opaque markers, PAX xattrs).
#include <zlib.h>
#include <sys/xattr.h>

// inflateInit2 is a macro in zlib.h; Swift cannot call macros, so wrap it.
static inline int czlib_inflate_init2(z_stream *strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}

// syncfs(2) is only declared with _GNU_SOURCE, which Glibc's Swift module does not set.
int syncfs(int fd);
