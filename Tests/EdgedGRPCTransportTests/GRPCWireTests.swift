import GRPCCore
import NIOCore
import NIOHPACK
import Testing
@testable import EdgedGRPCTransport

@Suite struct GRPCWireTests {
    @Test func messagesAreFoundAcrossDataFrameBoundaries() throws {
        let allocator = ByteBufferAllocator()
        var wire = GRPCWire.frame([1, 2, 3], allocator: allocator)
        var second = GRPCWire.frame(Array(repeating: 7, count: 300), allocator: allocator)
        wire.writeBuffer(&second)
        var empty = GRPCWire.frame([], allocator: allocator)
        wire.writeBuffer(&empty)
        var deframer = GRPCMessageDeframer(maxMessageBytes: 1024)
        var messages: [[UInt8]] = []
        // Feed it a byte at a time, then in odd chunks: the messages come out whole either way.
        while let byte = wire.readSlice(length: 1) {
            deframer.append(byte)
            while let m = try deframer.next() { messages.append(m) }
        }
        #expect(messages == [[1, 2, 3], Array(repeating: 7, count: 300), []])
        #expect(deframer.pendingBytes == 0)
    }

    @Test func compressedAndOversizedMessagesAreErrors() throws {
        var deframer = GRPCMessageDeframer(maxMessageBytes: 1024)
        deframer.append(ByteBuffer(bytes: [1, 0, 0, 0, 1, 42]))
        #expect(throws: RPCError.self) { try deframer.next() }
        do {
            _ = try deframer.next()
        } catch let error as RPCError {
            #expect(error.code == .internalError)
            #expect(error.message.contains("compressed"))
        }
        var small = GRPCMessageDeframer(maxMessageBytes: 10)
        small.append(ByteBuffer(bytes: [0, 0, 0, 0, 11]))   // the header alone is enough to refuse it
        do {
            _ = try small.next()
            Issue.record("an 11-byte message passed a 10-byte limit")
        } catch let error as RPCError {
            #expect(error.code == .resourceExhausted)
            #expect(error.message.contains("11 bytes") && error.message.contains("10 bytes"))
        }
    }

    @Test func statusMessagesArePercentEncodedLikeGRPC() {
        let text = "100% sure: naïve\nline"
        let encoded = GRPCWire.percentEncode(text)
        #expect(encoded == "100%25 sure: na%C3%AFve%0Aline")
        #expect(GRPCWire.percentDecode(encoded) == text)
        #expect(GRPCWire.percentDecode("bad %G1 and %4") == "bad %G1 and %4")
    }

    @Test func statusComesFromTrailers() {
        let ok = GRPCWire.status(from: ["grpc-status": "7", "grpc-message": "no%20way"])
        #expect(ok.code == .permissionDenied && ok.message == "no way")
        #expect(GRPCWire.status(from: [:]).code == .unknown)
        let bad = GRPCWire.status(from: ["grpc-status": "99"])
        #expect(bad.code == .unknown && bad.message.contains("invalid grpc-status 99"))
        #expect(GRPCWire.code(forHTTPStatus: 404) == .unimplemented)
        #expect(GRPCWire.code(forHTTPStatus: 503) == .unavailable)
    }

    @Test func metadataMapsToHeadersAndBack() {
        var metadata: Metadata = ["agentID": "node-1"]
        metadata.addBinary([0, 255, 1], forKey: "trace-bin")
        metadata.addString("dropped", forKey: "content-type")
        var headers: HPACKHeaders = [":status": "200"]
        GRPCWire.add(metadata, to: &headers)
        #expect(headers.first(name: "agentid") == "node-1")
        #expect(headers.first(name: "trace-bin") == "AP8B")
        #expect(headers[canonicalForm: "content-type"].isEmpty)
        // Go sends -bin values without padding.
        headers.replaceOrAdd(name: "trace-bin", value: "AP8B")
        headers.add(name: "other-bin", value: "AA")
        let back = GRPCWire.metadata(from: headers)
        #expect(Array(back[stringValues: "AGENTID"]) == ["node-1"])
        #expect(Array(back[binaryValues: "trace-bin"]) == [[0, 255, 1]])
        #expect(Array(back[binaryValues: "other-bin"]) == [[0]])
        #expect(Array(back[":status"]).isEmpty)
    }

    @Test func timeoutsFitGRPCsEightDigits() {
        #expect(GRPCWire.timeout(.milliseconds(1500)) == "1500000u")
        #expect(GRPCWire.timeout(.seconds(200)) == "200000m")
        #expect(GRPCWire.timeout(.seconds(500_000_000)) == "99999999S")
        #expect(GRPCWire.isGRPC(contentType: "application/grpc+proto"))
        #expect(!GRPCWire.isGRPC(contentType: "application/grpcx"))
        #expect(!GRPCWire.isGRPC(contentType: nil))
    }
}
