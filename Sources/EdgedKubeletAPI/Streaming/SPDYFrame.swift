// SPDY/3.1 frames (the framing kubectl's and kube-apiserver's spdystream speak) and their wire codec.
import NIOCore

/// A frame that breaks the SPDY/3.1 rules; the session ends (GOAWAY PROTOCOL_ERROR) and logs `message`.
struct SPDYProtocolError: Error, CustomStringConvertible, Equatable {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// A header block: lowercase names, each once; a value with several parts has them NUL-separated on the wire.
struct SPDYHeaders: Equatable, ExpressibleByDictionaryLiteral {
    var pairs: [(name: String, value: String)] = []

    init(_ pairs: [(String, String)] = []) { self.pairs = pairs.map { (name: $0.0, value: $0.1) } }
    init(dictionaryLiteral elements: (String, String)...) { self.init(elements) }

    subscript(name: String) -> String? { pairs.first { $0.name == name.lowercased() }?.value }

    static func == (a: SPDYHeaders, b: SPDYHeaders) -> Bool {
        a.pairs.count == b.pairs.count && zip(a.pairs, b.pairs).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }

    /// The uncompressed block: count, then length-prefixed names and values (all 32-bit big-endian).
    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func put(_ n: Int) {
            let v = UInt32(n)
            out += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
        }
        put(pairs.count)
        for (name, value) in pairs {
            put(name.utf8.count)
            out += name.lowercased().utf8
            put(value.utf8.count)
            out += value.utf8
        }
        return out
    }

    static func decode(_ bytes: [UInt8]) throws -> SPDYHeaders {
        var buffer = ByteBuffer(bytes: bytes)
        guard let count = buffer.readInteger(as: UInt32.self) else { throw SPDYProtocolError("truncated header block") }
        guard count <= 1024 else { throw SPDYProtocolError("header block with \(count) headers (at most 1024)") }
        var headers = SPDYHeaders()
        for _ in 0..<count {
            guard let nameLength = buffer.readInteger(as: UInt32.self), let name = buffer.readString(length: Int(nameLength)),
                  let valueLength = buffer.readInteger(as: UInt32.self),
                  let value = buffer.readString(length: Int(valueLength)) else {
                throw SPDYProtocolError("truncated header block")
            }
            guard !name.isEmpty else { throw SPDYProtocolError("header block with an empty header name") }
            guard name == name.lowercased() else { throw SPDYProtocolError("header name \"\(name)\" is not lowercase") }
            guard headers[name] == nil else { throw SPDYProtocolError("header \"\(name)\" appears twice in one block") }
            headers.pairs.append((name: name, value: value))
        }
        return headers
    }
}

/// One SPDY/3.1 frame.
enum SPDYFrame: Equatable {
    case data(streamID: UInt32, fin: Bool, payload: ByteBuffer)
    case synStream(streamID: UInt32, associatedStreamID: UInt32, priority: UInt8, fin: Bool, unidirectional: Bool,
                   headers: SPDYHeaders)
    case synReply(streamID: UInt32, fin: Bool, headers: SPDYHeaders)
    case rstStream(streamID: UInt32, status: UInt32)
    /// (flags, id, value) triples.
    case settings(clearPersisted: Bool, entries: [SPDYSetting])
    case ping(id: UInt32)
    case goAway(lastGoodStreamID: UInt32, status: UInt32)
    case headers(streamID: UInt32, fin: Bool, headers: SPDYHeaders)
    case windowUpdate(streamID: UInt32, delta: UInt32)

    static let version: UInt16 = 3
    static let maxPayload = (1 << 24) - 1
}

struct SPDYSetting: Equatable {
    var flags: UInt8
    var id: UInt32
    var value: UInt32
    static let initialWindowSize: UInt32 = 7
}

/// RST_STREAM status codes.
enum SPDYStatus {
    static let protocolError: UInt32 = 1
    static let invalidStream: UInt32 = 2
    static let refusedStream: UInt32 = 3
    static let cancel: UInt32 = 5
    static let internalError: UInt32 = 6
    static let flowControlError: UInt32 = 7
    static let streamInUse: UInt32 = 8
}

/// Encodes and decodes frames of one session; owns the session's two header compression contexts.
final class SPDYFrameCodec {
    private let compressor = SPDYHeaderCompressor()
    private let decompressor = SPDYHeaderDecompressor()
    /// Largest control frame accepted (data frames may use the whole 24-bit length).
    var maxControlFrame = 1 << 20

    /// The next whole frame from `buffer`, or nil when more bytes are needed. Unknown control frame types are
    /// skipped, as the spec asks.
    func decode(_ buffer: inout ByteBuffer) throws -> SPDYFrame? {
        while true {
            guard buffer.readableBytes >= 8, let word = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
                  let second = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt32.self) else { return nil }
            let flags = UInt8(second >> 24)
            let length = Int(second & 0x00ff_ffff)
            if word & 0x8000_0000 != 0 {
                let version = UInt16((word >> 16) & 0x7fff)
                guard version == SPDYFrame.version else {
                    throw SPDYProtocolError("control frame of SPDY version \(version) (only 3 is spoken)")
                }
                guard length <= maxControlFrame else {
                    throw SPDYProtocolError("control frame of \(length) bytes (at most \(maxControlFrame))")
                }
            }
            guard buffer.readableBytes >= 8 + length else { return nil }
            buffer.moveReaderIndex(forwardBy: 8)
            var payload = buffer.readSlice(length: length)!
            if word & 0x8000_0000 == 0 {
                return .data(streamID: word & 0x7fff_ffff, fin: flags & 0x01 != 0, payload: payload)
            }
            if let frame = try decodeControl(type: UInt16(word & 0xffff), flags: flags, payload: &payload) {
                return frame
            }
        }
    }

    private func decodeControl(type: UInt16, flags: UInt8, payload p: inout ByteBuffer) throws -> SPDYFrame? {
        func u32(_ what: String) throws -> UInt32 {
            guard let v = p.readInteger(as: UInt32.self) else { throw SPDYProtocolError("truncated \(what) frame") }
            return v
        }
        func fixed(_ n: Int, _ what: String) throws {
            guard p.readableBytes == n else {
                throw SPDYProtocolError("\(what) frame of \(p.readableBytes) bytes (want \(n))")
            }
        }
        func block() throws -> SPDYHeaders {
            let compressed = p.readBytes(length: p.readableBytes) ?? []
            return try SPDYHeaders.decode(try decompressor.decompress(compressed))
        }
        switch type {
        case 1:
            let id = try u32("SYN_STREAM") & 0x7fff_ffff
            let assoc = try u32("SYN_STREAM") & 0x7fff_ffff
            guard let prio = p.readInteger(as: UInt8.self), p.readInteger(as: UInt8.self) != nil else {
                throw SPDYProtocolError("truncated SYN_STREAM frame")
            }
            guard id != 0 else { throw SPDYProtocolError("SYN_STREAM with stream id 0") }
            return .synStream(streamID: id, associatedStreamID: assoc, priority: prio >> 5, fin: flags & 1 != 0,
                              unidirectional: flags & 2 != 0, headers: try block())
        case 2:
            let id = try u32("SYN_REPLY") & 0x7fff_ffff
            return .synReply(streamID: id, fin: flags & 1 != 0, headers: try block())
        case 3:
            try fixed(8, "RST_STREAM")
            return .rstStream(streamID: try u32("RST_STREAM") & 0x7fff_ffff, status: try u32("RST_STREAM"))
        case 4:
            let count = try u32("SETTINGS")
            try fixed(Int(count) * 8, "SETTINGS")
            var entries: [SPDYSetting] = []
            for _ in 0..<count {
                let idWord = try u32("SETTINGS")
                entries.append(SPDYSetting(flags: UInt8(idWord >> 24), id: idWord & 0x00ff_ffff, value: try u32("SETTINGS")))
            }
            return .settings(clearPersisted: flags & 1 != 0, entries: entries)
        case 6:
            try fixed(4, "PING")
            return .ping(id: try u32("PING"))
        case 7:
            try fixed(8, "GOAWAY")
            return .goAway(lastGoodStreamID: try u32("GOAWAY") & 0x7fff_ffff, status: try u32("GOAWAY"))
        case 8:
            let id = try u32("HEADERS") & 0x7fff_ffff
            return .headers(streamID: id, fin: flags & 1 != 0, headers: try block())
        case 9:
            try fixed(8, "WINDOW_UPDATE")
            let id = try u32("WINDOW_UPDATE") & 0x7fff_ffff
            let delta = try u32("WINDOW_UPDATE") & 0x7fff_ffff
            guard delta > 0 else { throw SPDYProtocolError("WINDOW_UPDATE of 0 bytes for stream \(id)") }
            return .windowUpdate(streamID: id, delta: delta)
        default:
            return nil
        }
    }

    /// Appends `frame` to `out`. A data payload over 2^24-1 bytes must be split by the caller.
    func encode(_ frame: SPDYFrame, into out: inout ByteBuffer) throws {
        func control(_ type: UInt16, _ flags: UInt8, _ body: [UInt8]) {
            out.writeInteger(UInt32(0x8000_0000) | UInt32(SPDYFrame.version) << 16 | UInt32(type))
            out.writeInteger(UInt32(flags) << 24 | UInt32(body.count))
            out.writeBytes(body)
        }
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
        switch frame {
        case .data(let id, let fin, var payload):
            out.writeInteger(id & 0x7fff_ffff)
            out.writeInteger(UInt32(fin ? 1 : 0) << 24 | UInt32(payload.readableBytes))
            out.writeBuffer(&payload)
        case .synStream(let id, let assoc, let prio, let fin, let uni, let headers):
            let flags: UInt8 = (fin ? 1 : 0) | (uni ? 2 : 0)
            control(1, flags, be(id) + be(assoc) + [prio << 5, 0] + (try compressor.compress(headers.encoded())))
        case .synReply(let id, let fin, let headers):
            control(2, fin ? 1 : 0, be(id) + (try compressor.compress(headers.encoded())))
        case .rstStream(let id, let status):
            control(3, 0, be(id) + be(status))
        case .settings(let clear, let entries):
            var body = be(UInt32(entries.count))
            for e in entries { body += be(UInt32(e.flags) << 24 | (e.id & 0x00ff_ffff)) + be(e.value) }
            control(4, clear ? 1 : 0, body)
        case .ping(let id):
            control(6, 0, be(id))
        case .goAway(let last, let status):
            control(7, 0, be(last) + be(status))
        case .headers(let id, let fin, let headers):
            control(8, fin ? 1 : 0, be(id) + (try compressor.compress(headers.encoded())))
        case .windowUpdate(let id, let delta):
            control(9, 0, be(id) + be(delta))
        }
    }
}
