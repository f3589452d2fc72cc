// The streaming protocols end to end over loopback: request parsing, the SPDY/3 codec, SPDY and WebSocket sessions
// against StreamingServer with real processes (pipes and a pty) and a real TCP echo "pod".
import EdgedCore
@testable import EdgedKubeletAPI
import Foundation
import NIOCore
import Testing

@Suite struct StreamingRequestTests {
    @Test func parsesExecWithApiserverAndPodFlagNames() throws {
        let r = try StreamingRequest.parse(path: "/exec/ns/p/uid-1/app", query: "command=sh&command=-c&command=echo%20hi&input=1&output=1&tty=1")
        #expect(r == .exec(ContainerRef(namespace: "ns", pod: "p", uid: "uid-1", container: "app"),
                           command: ["sh", "-c", "echo hi"], streams: StreamFlags(stdin: true, stdout: true, stderr: false, tty: true)))
        let r2 = try StreamingRequest.parse(path: "/exec/ns/p/app", query: "command=ls&stdout=true&stderr=true")
        #expect(r2 == .exec(ContainerRef(namespace: "ns", pod: "p", container: "app"), command: ["ls"],
                            streams: StreamFlags(stdout: true, stderr: true)))
        #expect(try StreamingRequest.parse(path: "/attach/ns/p/app", query: "output=1")
                == .attach(ContainerRef(namespace: "ns", pod: "p", container: "app"), streams: StreamFlags(stdout: true)))
        #expect(try StreamingRequest.parse(path: "/portForward/ns/p", query: "port=80&port=8080")
                == .portForward(namespace: "ns", pod: "p", uid: nil, ports: [80, 8080]))
        #expect(try StreamingRequest.parse(path: "/portForward/ns/p/u", query: "")
                == .portForward(namespace: "ns", pod: "p", uid: "u", ports: []))
        #expect(try StreamingRequest.parse(path: "/containerLogs/ns/p/app", query: "") == nil)
    }

    @Test func malformedRequestsAreErrors() {
        #expect(throws: StreamingError.self) { try StreamingRequest.parse(path: "/exec/ns/p/app", query: "output=1") }
        #expect(throws: StreamingError.self) { try StreamingRequest.parse(path: "/exec/ns/p/app", query: "command=ls") }
        #expect(throws: StreamingError.self) { try StreamingRequest.parse(path: "/exec/ns", query: "command=ls&output=1") }
        #expect(throws: StreamingError.self) { try StreamingRequest.parse(path: "/portForward/ns/p", query: "port=0") }
        #expect(throws: StreamingError.self) { try StreamingRequest.parse(path: "/portForward/ns/p", query: "port=http") }
    }
}

@Suite struct StreamingSPDYCodecTests {
    @Test func dictionaryIsTheSPDY3One() {
        // zlib's Adler-32 of the dictionary is the DICTID every SPDY/3 header block announces.
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in SPDYDictionary.bytes { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
        #expect(SPDYDictionary.bytes.count == 1423)
        #expect(b << 16 | a == 0xe3c6_a7c2)
    }

    @Test func headerBlockUsesTheDictionaryAndDecodesWithASeparateInflate() throws {
        let headers: SPDYHeaders = ["streamtype": "stdout", "port": "8080"]
        let compressed = try SPDYHeaderCompressor().compress(headers.encoded())
        #expect(compressed[1] & 0x20 != 0)  // FDICT
        #expect(Array(compressed[2..<6]) == [0xe3, 0xc6, 0xa7, 0xc2])
        #expect(compressed.suffix(4) == [0x00, 0x00, 0xff, 0xff])  // sync flush: the block ends here
        let inflate = SPDYHeaderDecompressor()
        #expect(try SPDYHeaders.decode(try inflate.decompress(compressed)) == headers)
        // The second block of a session reuses the context (and needs no dictionary again).
        let compressor = SPDYHeaderCompressor()
        let decompressor = SPDYHeaderDecompressor()
        for block: SPDYHeaders in [["streamtype": "error"], ["streamtype": "stdin", "requestid": "1"]] {
            #expect(try SPDYHeaders.decode(try decompressor.decompress(try compressor.compress(block.encoded()))) == block)
        }
    }

    @Test func knownFrameVectors() throws {
        let codec = SPDYFrameCodec()
        var out = ByteBuffer()
        try codec.encode(.ping(id: 1), into: &out)
        #expect(Array(out.readableBytesView) == [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1])
        out.clear()
        try codec.encode(.windowUpdate(streamID: 3, delta: 0x8000), into: &out)
        #expect(Array(out.readableBytesView) == [0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 3, 0, 0, 0x80, 0])
        out.clear()
        try codec.encode(.data(streamID: 5, fin: true, payload: ByteBuffer(string: "hi")), into: &out)
        #expect(Array(out.readableBytesView) == [0, 0, 0, 5, 0x01, 0, 0, 2, 0x68, 0x69])
        out.clear()
        try codec.encode(.rstStream(streamID: 7, status: 5), into: &out)
        #expect(Array(out.readableBytesView) == [0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 7, 0, 0, 0, 5])
    }

    @Test func everyFrameRoundTrips() throws {
        let frames: [SPDYFrame] = [
            .synStream(streamID: 1, associatedStreamID: 0, priority: 2, fin: false, unidirectional: false,
                       headers: ["streamtype": "error"]),
            .synReply(streamID: 1, fin: false, headers: SPDYHeaders()),
            .data(streamID: 1, fin: false, payload: ByteBuffer(bytes: Array(repeating: 7, count: 70_000))),
            .data(streamID: 1, fin: true, payload: ByteBuffer()),
            .rstStream(streamID: 3, status: SPDYStatus.cancel),
            .settings(clearPersisted: false, entries: [SPDYSetting(flags: 0, id: SPDYSetting.initialWindowSize, value: 1 << 20)]),
            .ping(id: 3),
            .goAway(lastGoodStreamID: 9, status: 0),
            .headers(streamID: 1, fin: true, headers: ["a": "b"]),
            .windowUpdate(streamID: 0, delta: 4096),
        ]
        let sender = SPDYFrameCodec(), receiver = SPDYFrameCodec()
        var wire = ByteBuffer()
        for f in frames { try sender.encode(f, into: &wire) }
        // Fed one byte at a time: frames come out only when whole.
        var input = ByteBuffer()
        var decoded: [SPDYFrame] = []
        for byte in wire.readableBytesView {
            input.writeInteger(byte)
            while let f = try receiver.decode(&input) { decoded.append(f) }
        }
        #expect(decoded == frames)
    }

    @Test func malformedFramesAreErrors() {
        let codec = SPDYFrameCodec()
        var v2 = ByteBuffer(bytes: [0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1])
        #expect(throws: SPDYProtocolError.self) { try codec.decode(&v2) }
        var shortPing = ByteBuffer(bytes: [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x02, 0, 1])
        #expect(throws: SPDYProtocolError.self) { try codec.decode(&shortPing) }
        var badBlock = ByteBuffer(bytes: [0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef])
        #expect(throws: SPDYProtocolError.self) { try SPDYFrameCodec().decode(&badBlock) }
    }

    @Test func sha1AndWebSocketAccept() {
        #expect(SHA1.hash(Array("abc".utf8)).map { String(format: "%02x", $0) }.joined() == "a9993e364706816aba3e25717850c26c9cd0d89d")
        // RFC 6455 section 1.3's example.
        #expect(SHA1.webSocketAccept(key: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }
}
