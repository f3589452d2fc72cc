// zlib for gzip-compressed layers and archives (apt: zlib1g-dev).
#include <zlib.h>

// inflateInit2 is a macro in zlib.h; Swift cannot call macros, so wrap it.
static inline int czlib_inflate_init2(z_stream *strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}
