// A streaming tar reader: ustar, GNU long names/links, PAX extended headers (path, linkpath, size, uid, gid, mtime,
// SCHILY.xattr.*). Entry data is read in chunks by the caller.

/// One entry of a tar stream.
struct TarEntry {
    enum Kind: Equatable { case file, directory, symlink, hardlink, charDevice, blockDevice, fifo }

    var path: String
    var kind: Kind
    var mode: UInt32
    var uid: Int
    var gid: Int
    var mtime: Int64
    var size: Int64
    var linkTarget: String
    var devMajor: UInt32
    var devMinor: UInt32
    var xattrs: [(String, [UInt8])]
}

/// Reads entries from a tar stream. Call `next()` for each entry, then `readData(into:)` for its content
/// (unread content is skipped by the next `next()`).
final class TarReader {
    private let source: ByteSource
    private let label: String
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    private var currentPath = ""
    private var globalPax: [String: [UInt8]] = [:]

    init(_ source: ByteSource, label: String) {
        self.source = source
        self.label = label
    }

    private func truncated() -> ImageError {
        ImageError(.corruptArchive, "\(label) is truncated (tar stream ends inside \(currentPath.isEmpty ? "a header" : "entry \(currentPath)"))")
    }

    /// Fills `buffer` completely; returns the bytes read (less only at the end of the stream).
    private func readFull(_ buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        var got = 0
        while got < buffer.count {
            let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...]))
            if n == 0 { break }
            got += n
        }
        return got
    }

    private func skip(_ count: Int64) throws(ImageError) {
        guard count > 0 else { return }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 1)
        defer { buf.deallocate() }
        var left = count
        while left > 0 {
            let n = try readFull(UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(left, 65536))]))
            if n == 0 { throw truncated() }
            left -= Int64(n)
        }
    }

    /// Reads the current entry's content; 0 at its end.
    func readData(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        guard remaining > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), remaining))
        let n = try readFull(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        if n < want { throw truncated() }
        remaining -= Int64(n)
        return n
    }

    private func readBlob(_ size: Int64) throws(ImageError) -> [UInt8] {
        guard size >= 0, size < 16 << 20 else {
            throw ImageError(.corruptArchive, "\(label): extended header of \(size) bytes is not plausible")
        }
        var out = [UInt8](repeating: 0, count: Int(size))
        let n = out.withUnsafeMutableBytes { b in (try? readFull(b)) ?? -1 }
        if n != Int(size) { throw truncated() }
        try skip((512 - size % 512) % 512)
        return out
    }

    /// The next entry, or nil at the end of the archive.
    func next() throws(ImageError) -> TarEntry? {
        try skip(remaining + padding)
        remaining = 0
        padding = 0
        var pax: [String: [UInt8]] = [:]
        var longName: String?
        var longLink: String?
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 1)
        defer { header.deallocate() }
        while true {
            let n = try readFull(header)
            // The end: two zero blocks, or (like Go and containerd accept) a clean end at a block boundary.
            if n == 0 { return nil }
            if n < 512 { throw truncated() }
            let h = UnsafeRawBufferPointer(header)
            if h.allSatisfy({ $0 == 0 }) { return nil }
            try verifyChecksum(h)
            let type = h[156]
            let size = try number(h, 124, 12)
            switch type {
            case UInt8(ascii: "x"):
                for (k, v) in try parsePax(readBlob(size)) { pax[k] = v }
                continue
            case UInt8(ascii: "g"):
                for (k, v) in try parsePax(readBlob(size)) { globalPax[k] = v }
                continue
            case UInt8(ascii: "L"):
                longName = cString(try readBlob(size)[...])
                continue
            case UInt8(ascii: "K"):
                longLink = cString(try readBlob(size)[...])
                continue
            default:
                break
            }
            let merged = globalPax.merging(pax) { $1 }
            var path = longName ?? field(h, 0, 100)
            let magic = Array(h[257..<263])
            if longName == nil && magic == Array("ustar\0".utf8) {
                let prefix = field(h, 345, 155)
                if !prefix.isEmpty { path = "\(prefix)/\(path)" }
            }
            if let p = merged["path"] { path = String(decoding: p, as: UTF8.self) }
            var link = longLink ?? field(h, 157, 100)
            if let l = merged["linkpath"] { link = String(decoding: l, as: UTF8.self) }
            var entrySize = size
            if let s = merged["size"], let v = Int64(String(decoding: s, as: UTF8.self)) { entrySize = v }
            var mtime = try number(h, 136, 12)
            if let m = merged["mtime"], let v = Int64(String(decoding: m, as: UTF8.self).split(separator: ".").first ?? "") {
                mtime = v
            }
            var uid = Int(try number(h, 108, 8))
            if let u = merged["uid"], let v = Int(String(decoding: u, as: UTF8.self)) { uid = v }
            var gid = Int(try number(h, 116, 8))
            if let g = merged["gid"], let v = Int(String(decoding: g, as: UTF8.self)) { gid = v }
            let kind: TarEntry.Kind
            switch type {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = path.hasSuffix("/") ? .directory : .file
            case UInt8(ascii: "1"): kind = .hardlink
            case UInt8(ascii: "2"): kind = .symlink
            case UInt8(ascii: "3"): kind = .charDevice
            case UInt8(ascii: "4"): kind = .blockDevice
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "6"): kind = .fifo
            default:
                throw ImageError(.corruptArchive, "\(label): entry \(path) has unsupported tar type '\(Character(Unicode.Scalar(type)))'")
            }
            currentPath = path
            // Like Go's archive/tar: only regular files carry data; other types are header-only whatever size says.
            if kind != .file { entrySize = 0 }
            guard entrySize >= 0 else { throw ImageError(.corruptArchive, "\(label): entry \(path) has a negative size") }
            remaining = entrySize
            padding = (512 - entrySize % 512) % 512
            var xattrs: [(String, [UInt8])] = []
            for (k, v) in merged where k.hasPrefix("SCHILY.xattr.") {
                xattrs.append((String(k.dropFirst("SCHILY.xattr.".count)), v))
            }
            return TarEntry(
                path: path, kind: kind, mode: UInt32(truncatingIfNeeded: try number(h, 100, 8)), uid: uid, gid: gid,
                mtime: mtime, size: entrySize, linkTarget: link,
                devMajor: UInt32(truncatingIfNeeded: try number(h, 329, 8)),
                devMinor: UInt32(truncatingIfNeeded: try number(h, 337, 8)), xattrs: xattrs)
        }
    }

    private func verifyChecksum(_ h: UnsafeRawBufferPointer) throws(ImageError) {
        var unsigned = 0
        var signed = 0
        for i in 0..<512 {
            let b = (148..<156).contains(i) ? UInt8(ascii: " ") : h[i]
            unsigned += Int(b)
            signed += Int(Int8(bitPattern: b))
        }
        let stored = try number(h, 148, 8)
        guard stored == unsigned || stored == signed else {
            throw ImageError(.corruptArchive, "\(label) is corrupt: bad tar header checksum (not a tar file, or damaged)")
        }
    }

    private func field(_ h: UnsafeRawBufferPointer, _ off: Int, _ len: Int) -> String {
        cString(h[off..<(off + len)])
    }

    private func cString<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An octal field, or GNU base-256 when the high bit of the first byte is set.
    private func number(_ h: UnsafeRawBufferPointer, _ off: Int, _ len: Int) throws(ImageError) -> Int64 {
        let f = h[off..<(off + len)]
        if let first = f.first, first & 0x80 != 0 {
            var v: Int64 = Int64(first & 0x7f)
            for b in f.dropFirst() {
                guard v < (Int64.max >> 8) else { throw ImageError(.corruptArchive, "\(label): tar number out of range") }
                v = (v << 8) | Int64(b)
            }
            return v
        }
        var v: Int64 = 0
        for b in f {
            if b == 0 || b == UInt8(ascii: " ") {
                if v != 0 { break } else { continue }
            }
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "7"), v < (Int64.max >> 3) else {
                throw ImageError(.corruptArchive, "\(label) is corrupt: bad number in tar header")
            }
            v = v * 8 + Int64(b - UInt8(ascii: "0"))
        }
        return v
    }

    /// PAX records: "<len> <key>=<value>\n".
    private func parsePax(_ data: [UInt8]) throws(ImageError) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        var i = 0
        while i < data.count {
            guard let sp = data[i...].firstIndex(of: UInt8(ascii: " ")),
                  let len = Int(String(decoding: data[i..<sp], as: UTF8.self)), len > 0, i + len <= data.count,
                  let eq = data[(sp + 1)..<(i + len)].firstIndex(of: UInt8(ascii: "=")) else {
                throw ImageError(.corruptArchive, "\(label) is corrupt: bad PAX header")
            }
            let key = String(decoding: data[(sp + 1)..<eq], as: UTF8.self)
            out[key] = Array(data[(eq + 1)..<(i + len - 1)])
            i += len
        }
        return out
    }
}
