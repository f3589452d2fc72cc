import EdgedCore
@testable import EdgedKube
import Testing

@Suite struct WatchStreamDecoderTests {
    static let stream = """
    {"type":"ADDED","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"default","resourceVersion":"11"},"data":{"k":"v\\n\\u00e9"}}}
    {"type":"MODIFIED","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"default","resourceVersion":"12"},"data":{"k":"w"}}}
    {"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"15","annotations":{"k8s.io/initial-events-end":"true"}}}}
    {"type":"DELETED","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"default","resourceVersion":"16"}}}
    {"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (16)","reason":"Expired","code":410}}

    """

    static func check(_ events: [WatchEvent<ConfigMap>]) {
        #expect(events.count == 5)
        guard events.count == 5 else { return }
        guard case .added(let a) = events[0] else { Issue.record("want ADDED, got \(events[0])"); return }
        #expect(a.metadata.resourceVersion == "11")
        #expect(a.data?["k"] == "v\né")
        guard case .modified(let m) = events[1] else { Issue.record("want MODIFIED"); return }
        #expect(m.data?["k"] == "w")
        #expect(events[2] == .bookmark(resourceVersion: "15"))
        guard case .deleted(let d) = events[3] else { Issue.record("want DELETED"); return }
        #expect(d.metadata.resourceVersion == "16")
        guard case .error(let st) = events[4] else { Issue.record("want ERROR"); return }
        #expect(st.code == 410)
        #expect(st.reason == "Expired")
    }

    @Test func wholeStreamInOneChunk() throws {
        var d = WatchStreamDecoder<ConfigMap>()
        var events = try d.feed(Array(Self.stream.utf8))
        if let last = try d.finish() { events.append(last) }
        Self.check(events)
    }

    @Test func everySplitPointAndByteByByte() throws {
        let bytes = Array(Self.stream.utf8)
        // Two chunks at every split point.
        for split in stride(from: 0, through: bytes.count, by: 7) {
            var d = WatchStreamDecoder<ConfigMap>()
            var events = try d.feed(bytes[0..<split])
            events += try d.feed(bytes[split...])
            if let last = try d.finish() { events.append(last) }
            Self.check(events)
        }
        // One byte at a time (splits inside multi-byte UTF-8 sequences and escapes too).
        var d = WatchStreamDecoder<ConfigMap>()
        var events: [WatchEvent<ConfigMap>] = []
        for b in bytes { events += try d.feed([b]) }
        if let last = try d.finish() { events.append(last) }
        Self.check(events)
    }

    @Test func randomChunkSizes() throws {
        let bytes = Array(Self.stream.utf8)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            var d = WatchStreamDecoder<ConfigMap>()
            var events: [WatchEvent<ConfigMap>] = []
            var i = 0
            while i < bytes.count {
                let n = Int.random(in: 1...40, using: &rng)
                events += try d.feed(bytes[i..<min(i + n, bytes.count)])
                i += n
            }
            if let last = try d.finish() { events.append(last) }
            Self.check(events)
        }
    }

    @Test func lastEventWithoutNewlineAndBlankLines() throws {
        var d = WatchStreamDecoder<ConfigMap>()
        let text = "\n\r\n{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}"
        #expect(try d.feed(Array(text.utf8)).isEmpty)
        #expect(try d.finish() == .bookmark(resourceVersion: "9"))
        #expect(try d.finish() == nil)
    }

    @Test func rawObjectsKeepEveryField() throws {
        var d = WatchStreamDecoder<JSONObject>()
        let line = #"{"type":"ADDED","object":{"metadata":{"name":"l","resourceVersion":"3"},"spec":{"x-future":1.50}}}"# + "\n"
        let events = try d.feed(Array(line.utf8))
        guard case .added(let o) = events.first else { Issue.record("want ADDED"); return }
        #expect(o.metadata.name == "l")
        #expect(o.metadata.resourceVersion == "3")
        #expect(o.value.jsonText == #"{"metadata":{"name":"l","resourceVersion":"3"},"spec":{"x-future":1.50}}"#)
    }

    @Test func undecodableEventIsADecodingError() throws {
        var d = WatchStreamDecoder<ConfigMap>()
        #expect(throws: KubeError.self) { try d.feed(Array("{\"type\":\"ADDED\",\"object\":{\"metadata\":3}}\n".utf8)) }
        var d2 = WatchStreamDecoder<ConfigMap>()
        do {
            _ = try d2.feed(Array("{\"type\":\"SURPRISE\",\"object\":{}}\n".utf8))
            Issue.record("unknown type decoded")
        } catch {
            #expect(error.kind == .decoding)
        }
    }

    @Test func oversizedEventFailsTheStream() throws {
        var d = WatchStreamDecoder<ConfigMap>(maxEventBytes: 100)
        #expect(throws: KubeError.self) { try d.feed([UInt8](repeating: 0x20, count: 101)) }
    }
}
