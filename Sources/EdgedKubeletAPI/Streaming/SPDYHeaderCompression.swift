// SPDY/3 header block compression: zlib with the protocol's fixed dictionary, one context per direction per session.
import CZlib

/// The SPDY/3 header compression dictionary (spec section 2.6.10.1): length-prefixed common header words, then a
/// run of common values. Its Adler-32 (the zlib dictionary id) is 0xe3c6a7c2.
enum SPDYDictionary {
    static let words = [
        "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
        "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
        "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
        "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
        "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
        "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
        "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
        "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
        "keep-alive", "origin",
    ]
    static let tail = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        + "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
        + "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
        + "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        + "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        + "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."

    static let bytes: [UInt8] = {
        var out: [UInt8] = []
        for word in words {
            let n = UInt32(word.utf8.count)
            out += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
            out += word.utf8
        }
        out += tail.utf8
        return out
    }()
}

/// Compresses header blocks for one direction of a session (each block ends with a sync flush).
final class SPDYHeaderCompressor {
    private var stream = z_stream()
    private var ready = false

    init() {
        let level: Int32 = 6
        guard deflateInit_(&stream, level, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return }
        let dict = SPDYDictionary.bytes
        let rc = dict.withUnsafeBufferPointer { deflateSetDictionary(&stream, $0.baseAddress, UInt32($0.count)) }
        ready = rc == Z_OK
    }

    deinit { deflateEnd(&stream) }

    func compress(_ input: [UInt8]) throws -> [UInt8] {
        guard ready else { throw SPDYProtocolError("zlib deflate could not be initialised") }
        var input = input
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        try input.withUnsafeMutableBufferPointer { inPtr in
            stream.next_in = inPtr.baseAddress
            stream.avail_in = UInt32(inPtr.count)
            repeat {
                let produced: Int = try chunk.withUnsafeMutableBufferPointer { outPtr in
                    stream.next_out = outPtr.baseAddress
                    stream.avail_out = UInt32(outPtr.count)
                    let rc = deflate(&stream, Z_SYNC_FLUSH)
                    guard rc == Z_OK || rc == Z_BUF_ERROR else { throw SPDYProtocolError("zlib deflate failed (\(rc))") }
                    return outPtr.count - Int(stream.avail_out)
                }
                out += chunk[0..<produced]
            } while stream.avail_out == 0
            stream.next_in = nil
        }
        return out
    }
}

/// Decompresses header blocks for one direction of a session.
final class SPDYHeaderDecompressor {
    private var stream = z_stream()
    private var ready = false
    /// Largest decompressed header block accepted.
    let limit: Int

    init(limit: Int = 256 * 1024) {
        self.limit = limit
        ready = inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
    }

    deinit { inflateEnd(&stream) }

    func decompress(_ input: [UInt8]) throws -> [UInt8] {
        guard ready else { throw SPDYProtocolError("zlib inflate could not be initialised") }
        var input = input
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        try input.withUnsafeMutableBufferPointer { inPtr in
            stream.next_in = inPtr.baseAddress
            stream.avail_in = UInt32(inPtr.count)
            defer { stream.next_in = nil }
            while true {
                let (rc, produced): (Int32, Int) = chunk.withUnsafeMutableBufferPointer { outPtr in
                    stream.next_out = outPtr.baseAddress
                    stream.avail_out = UInt32(outPtr.count)
                    let rc = inflate(&stream, Z_SYNC_FLUSH)
                    return (rc, outPtr.count - Int(stream.avail_out))
                }
                out += chunk[0..<produced]
                if out.count > limit { throw SPDYProtocolError("header block larger than \(limit) bytes") }
                switch rc {
                case Z_NEED_DICT:
                    let dict = SPDYDictionary.bytes
                    let set = dict.withUnsafeBufferPointer { inflateSetDictionary(&stream, $0.baseAddress, UInt32($0.count)) }
                    guard set == Z_OK else { throw SPDYProtocolError("header block wants a zlib dictionary other than SPDY/3's") }
                case Z_OK:
                    if stream.avail_in == 0 && stream.avail_out != 0 { return }
                case Z_BUF_ERROR:
                    if stream.avail_in == 0 { return }
                    throw SPDYProtocolError("corrupt compressed header block")
                default:
                    throw SPDYProtocolError("corrupt compressed header block (zlib \(rc))")
                }
            }
        }
        return out
    }
}
