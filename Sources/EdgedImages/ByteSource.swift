// Pull-based byte streams: a file, a SHA-256 tap, a gzip decoder. Layers stream through these in small chunks,
// so nothing is ever held whole in memory (devices have 256 MB).

#if canImport(Glibc)
import Glibc
#endif
import CZlib

/// A stream of bytes read in chunks; `read` returns 0 at the end.
protocol ByteSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int
}

/// Reads a file descriptor.
final class FileSource: ByteSource {
    private let file: OwnedFD
    private let label: String

    init(path: String, label: String) throws(ImageError) {
        self.file = try FS.openRead(path)
        self.label = label
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        while true {
            let n = Glibc.read(file.fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR { throw ImageError(.io, "cannot read \(label): \(FS.errorText())") }
        }
    }
}

/// Passes bytes through and hashes them; `count` is the number of bytes seen.
final class HashingSource: ByteSource {
    private let inner: ByteSource
    private var hasher = Hasher256()
    private(set) var count: Int64 = 0

    init(_ inner: ByteSource) { self.inner = inner }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        let n = try inner.read(into: buffer)
        hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        count += Int64(n)
        return n
    }

    /// Reads the rest of the stream so the digest covers all of it (tar readers stop at the end marker).
    func drain() throws(ImageError) {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 1)
        defer { buf.deallocate() }
        while try read(into: buf) > 0 {}
    }

    var digest: String { hasher.finalize() }
}

/// Looks at the first bytes of a stream without consuming them, to detect gzip or zstd.
final class PeekableSource: ByteSource {
    private let inner: ByteSource
    private var head: [UInt8] = []
    private var headOffset = 0

    init(_ inner: ByteSource) { self.inner = inner }

    func peek(_ n: Int) throws(ImageError) -> [UInt8] {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 1)
        defer { buf.deallocate() }
        while head.count < n {
            let got = try inner.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<(n - head.count)]))
            if got == 0 { break }
            head.append(contentsOf: buf[0..<got])
        }
        return Array(head.prefix(n))
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        if headOffset < head.count {
            let n = min(buffer.count, head.count - headOffset)
            head[headOffset..<(headOffset + n)].withUnsafeBytes { buffer.copyMemory(from: $0) }
            headOffset += n
            return n
        }
        return try inner.read(into: buffer)
    }

    enum Compression { case none, gzip, zstd }

    func detectCompression() throws(ImageError) -> Compression {
        let h = try peek(4)
        if h.count >= 2 && h[0] == 0x1f && h[1] == 0x8b { return .gzip }
        if h == [0x28, 0xb5, 0x2f, 0xfd] { return .zstd }
        return .none
    }
}

/// Decompresses gzip (several members in a row are one stream, like gunzip) through zlib.
final class GzipSource: ByteSource {
    private let inner: ByteSource
    private let label: String
    private let stream: UnsafeMutablePointer<z_stream>
    private let input: UnsafeMutableRawBufferPointer
    private var inputEnded = false
    private var finished = false

    init(_ inner: ByteSource, label: String) throws(ImageError) {
        self.inner = inner
        self.label = label
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        input = .allocate(byteCount: 65536, alignment: 1)
        // 15 + 32: a full window, and accept a gzip or zlib header.
        guard czlib_inflate_init2(stream, 15 + 32) == Z_OK else {
            stream.deallocate()
            input.deallocate()
            throw ImageError(.compression, "\(label): cannot start the gzip decoder")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
        input.deallocate()
    }

    private func fill() throws(ImageError) {
        guard stream.pointee.avail_in == 0, !inputEnded else { return }
        let n = try inner.read(into: input)
        if n == 0 { inputEnded = true }
        stream.pointee.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_in = UInt32(n)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        guard !finished, buffer.count > 0 else { return 0 }
        while true {
            try fill()
            if inputEnded && stream.pointee.avail_in == 0 {
                throw ImageError(.corruptArchive, "\(label): gzip stream ends early (file truncated?)")
            }
            stream.pointee.next_out = buffer.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = UInt32(min(buffer.count, Int(UInt32.max)))
            let rc = inflate(stream, Z_NO_FLUSH)
            let produced = buffer.count - Int(stream.pointee.avail_out)
            switch rc {
            case Z_OK, Z_BUF_ERROR:
                if produced > 0 { return produced }
            case Z_STREAM_END:
                // Another gzip member may follow; anything else after the end is ignored like gzip -d does.
                try fill()
                if stream.pointee.avail_in > 0 && stream.pointee.next_in.pointee == 0x1f {
                    inflateReset(stream)
                } else {
                    finished = true
                }
                if produced > 0 || finished { return produced }
            default:
                let msg = stream.pointee.msg.map { String(cString: $0) } ?? "error \(rc)"
                throw ImageError(.compression, "\(label): gzip data is corrupt (\(msg))")
            }
        }
    }
}

/// Opens a (maybe compressed) stream: gzip is decoded, zstd is refused with a clear error.
func decompressing(_ source: ByteSource, label: String, mediaType: String? = nil) throws(ImageError) -> ByteSource {
    let peek = PeekableSource(source)
    switch try peek.detectCompression() {
    case .none: return peek
    case .gzip: return try GzipSource(peek, label: label)
    case .zstd:
        throw ImageError(.compression, "\(label) is zstd-compressed (\(mediaType ?? "media type \(MediaType.ociLayerZstd)")); "
            + "this edged build has no zstd support: re-push the image with gzip layers")
    }
}
