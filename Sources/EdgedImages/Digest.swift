// Content digests ("sha256:<hex>") and a streaming SHA-256.

import Crypto

/// Helpers for "sha256:<hex>" digests, the only algorithm edged accepts.
enum Digest {
    static func isValid(_ d: String) -> Bool {
        guard d.hasPrefix("sha256:") else { return false }
        let hex = d.utf8.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// The hex part of a valid digest.
    static func hex(_ d: String) -> String { String(d.dropFirst(7)) }

    static func of<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var h = Hasher256()
        h.update(Array(bytes))
        return h.finalize()
    }
}

/// A streaming SHA-256 that yields "sha256:<hex>".
struct Hasher256 {
    private var sha = SHA256()

    mutating func update(_ bytes: UnsafeRawBufferPointer) { sha.update(bufferPointer: bytes) }
    mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { sha.update(bufferPointer: $0) } }

    func finalize() -> String {
        let table: [Character] = Array("0123456789abcdef")
        var s = "sha256:"
        for b in sha.finalize() {
            s.append(table[Int(b >> 4)])
            s.append(table[Int(b & 0xf)])
        }
        return s
    }
}
